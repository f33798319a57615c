//! `conclave`: peer-to-peer, end-to-end encrypted meetings.
//!
//! Parses the command line (contract in `docs/architecture.md`), sets up logging on stderr
//! (`RUST_LOG`), and runs one of the [`cli`] commands or the desktop app ([`gui`]: `conclave
//! gui`, or `conclave` alone when `DISPLAY` / `WAYLAND_DISPLAY` is set; without a display and
//! without a command it prints the usage). Exit codes: 0 normal leave, 2 bad usage or
//! malformed invite, 3 join refused, 1 anything else. Both front ends use only the crate root
//! of `conclave_core` (its public API), and [`media`] unpacks media events for both.
//!
//! The data directory is sealed at rest (`conclave_core::store`): the process creates files
//! 0600 and directories 0700 (umask 077), and the store key comes from `--passphrase-file`,
//! or, only when the user opts in with `--insecure-key-file` / `CONCLAVE_INSECURE_KEY_FILE=1`
//! (as `make demo`, CI and the system tests do), from a 0600 key file.

mod cli;
mod gui;
mod media;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use conclave_core::{
    Client, Config, INSECURE_KEY_FILE_ENV, Invite, KeySource, MediaConfig, Multiaddr, parse_relay,
};

use cli::output::Output;
use cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use conclave_core::ScreenSpec;
use conclave_core::media::video::source::VideoSpec;

/// Peer-to-peer, end-to-end encrypted meetings. No server holds a key, a roster or a message.
#[derive(Debug, Parser)]
#[command(name = "conclave", version)]
struct Args {
    /// Where this installation keeps its identity and state (default: the platform data
    /// directory). Two processes with different data dirs are two different people.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object per line on stdout, each with an "event" field.
    #[arg(long, global = true)]
    json: bool,
    /// Your display name in meetings (remembered in the data dir).
    #[arg(long, global = true)]
    name: Option<String>,
    /// Address to listen on (repeatable; default: QUIC and TCP on every interface).
    #[arg(long = "listen", global = true)]
    listen: Vec<Multiaddr>,
    /// Do not use mDNS LAN discovery.
    #[arg(long, global = true)]
    no_mdns: bool,
    /// Audio to send: device (the microphone), silence, tone:HZ or a WAV file (turns audio on).
    #[arg(long, global = true)]
    audio_in: Option<String>,
    /// Where the received audio goes: a WAV file, or null (turns audio on).
    #[arg(long, global = true)]
    audio_out: Option<String>,
    /// Video to send: testsrc (a stamped 640x360 test pattern; testsrc:WxH for another
    /// size), a .y4m file (played in a loop), or camera[:N] (turns media on).
    #[arg(long, global = true, value_name = "SOURCE", value_parser = video_spec_arg)]
    video_in: Option<VideoSpec>,
    /// Share a screen from the start: monitor N of the X display (0, the primary, when N
    /// is left out); `/share on|off` turns it on and off during the meeting (turns media on).
    #[arg(long, global = true, value_name = "N", num_args = 0..=1, require_equals = true,
          default_missing_value = "0", value_parser = screen_spec_arg)]
    share_screen: Option<ScreenSpec>,
    /// Write each member's received video to DIR/<peer id>/ (a shared screen to
    /// DIR/<peer id>-screen/): frames.tsv (one line per picture) and a PNG snapshot every
    /// second (turns media on).
    #[arg(long, global = true, value_name = "DIR")]
    video_out: Option<PathBuf>,
    /// Noise suppression of the outgoing audio: on, off, or auto (on for a microphone, off
    /// for synthetic and file sources).
    #[arg(long, global = true, value_enum, default_value_t = Toggle::Auto)]
    noise_suppression: Toggle,
    /// Reach the other members through the relay only, for the control plane (relay
    /// circuits) and media (TURN): they never learn your IP addresses, at the cost of a
    /// relay hop. Needs a relay.
    #[arg(long, global = true)]
    relay_only: bool,
    /// UDP address for media (ICE host candidates), e.g. 127.0.0.1:0 (repeatable).
    #[arg(long = "media-bind", global = true)]
    media_bind: Vec<String>,
    /// Wrap the store key under the passphrase on the first line of FILE (the data
    /// directory is encrypted with that key).
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Keep the store key unprotected in DATA_DIR/store.key (mode 0600), with a warning:
    /// anyone who can read the data directory can read your identity and history. For
    /// demos and tests; also set by CONCLAVE_INSECURE_KEY_FILE=1.
    #[arg(long, global = true)]
    insecure_key_file: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// An on/off setting whose default depends on the situation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Toggle {
    Auto,
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the desktop app (also the default with a display and no command).
    Gui,
    /// Print this installation's peer id and safety number.
    Id,
    /// Create a meeting, print its invite, and stay in it.
    New {
        /// Every joiner waits in a lobby until you /approve it.
        #[arg(long)]
        lobby: bool,
        /// Relay / bootstrap multiaddr ending in /p2p/<peer id> (repeatable).
        #[arg(long = "relay", value_parser = relay_arg)]
        relays: Vec<Multiaddr>,
        /// Leave after this long (e.g. 30s, 5m); otherwise until stdin closes or Ctrl-C.
        #[arg(long, value_parser = humantime_or_seconds)]
        duration: Option<Duration>,
    },
    /// Join the meeting of an invite.
    Join {
        /// The conclave: invite.
        invite: String,
        /// Relay / bootstrap multiaddr ending in /p2p/<peer id> (repeatable).
        #[arg(long = "relay", value_parser = relay_arg)]
        relays: Vec<Multiaddr>,
        /// Leave after this long (e.g. 30s, 5m); otherwise until stdin closes or Ctrl-C.
        #[arg(long, value_parser = humantime_or_seconds)]
        duration: Option<Duration>,
    },
    /// Show the stored chat history of a meeting (or list remembered meetings).
    History {
        /// The meeting id (32 hex digits); omit to list meetings.
        meeting: Option<String>,
    },
    /// Forget a meeting: delete its chat history and invite from the store for good.
    Forget {
        /// The meeting id (32 hex digits, as `conclave history` lists them).
        meeting: String,
    },
    /// Run a real meeting on this machine (relay + participants on loopback) and report.
    Demo {
        /// How many participants.
        #[arg(long, default_value_t = 4)]
        participants: usize,
        /// How long to hold the meeting once everyone is in, in seconds.
        #[arg(long, default_value_t = 2)]
        seconds: u64,
    },
}

fn relay_arg(text: &str) -> Result<Multiaddr, String> {
    parse_relay(text).map_err(|e| e.to_string())
}

fn humantime_or_seconds(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (try 30, 30s or 5m)"))
}

/// Logs when `RUST_LOG` is unset: warnings, minus webrtc-rs's chatty negotiation warnings.
const DEFAULT_LOG_FILTER: &str =
    "warn,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error";

/// Where the store key comes from, by the flags: a passphrase file, the opt-in key file, or
/// the OS secret service (which refuses to start when there is none).
fn key_source(args: &Args) -> Result<KeySource, String> {
    let insecure = args.insecure_key_file
        || std::env::var(INSECURE_KEY_FILE_ENV).is_ok_and(|value| value == "1");
    match (&args.passphrase_file, insecure) {
        (Some(_), true) => Err(
            "--passphrase-file and --insecure-key-file exclude each other: choose one".to_owned(),
        ),
        (Some(path), false) => KeySource::passphrase_file(path).map_err(|err| err.to_string()),
        (None, true) => Ok(KeySource::InsecureKeyFile),
        (None, false) => Ok(KeySource::Auto),
    }
}

fn main() {
    // Everything this process writes (store, key files, settings) is private to the user.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .init();
    let started = std::time::Instant::now();
    let mut args = Args::parse();
    let out = Output { json: args.json };
    let command = match args.command.take() {
        Some(Command::Gui) => std::process::exit(run_gui(&args, started, out)),
        None if gui::display_available() => std::process::exit(run_gui(&args, started, out)),
        None => {
            use clap::CommandFactory;
            let _ = Args::command().print_help();
            std::process::exit(EXIT_USAGE);
        }
        Some(command) => command,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            out.error(
                "internal",
                &format!("cannot start the async runtime: {err}"),
            );
            std::process::exit(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(run(args, command, out));
    // Do not wait for lingering network tasks: everything that matters has been said.
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

/// Media settings from the flags: media is on when `--audio-in`, `--audio-out`,
/// `--video-in`, `--video-out` or `--share-screen` is given.
fn media_config(args: &Args) -> Option<MediaConfig> {
    if args.audio_in.is_none()
        && args.audio_out.is_none()
        && args.video_in.is_none()
        && args.video_out.is_none()
        && args.share_screen.is_none()
    {
        return None;
    }
    let mut media = MediaConfig {
        audio_in: args
            .audio_in
            .clone()
            .unwrap_or_else(|| "silence".to_owned()),
        audio_out: args
            .audio_out
            .as_deref()
            .filter(|o| *o != "null")
            .map(PathBuf::from),
        ..MediaConfig::default()
    };
    if !args.media_bind.is_empty() {
        media.udp_addrs = args.media_bind.clone();
    }
    media.relay_only = args.relay_only;
    media.video_in = args.video_in.clone();
    media.video_out = args.video_out.clone();
    media.share_screen = args.share_screen;
    media.noise_suppression = match args.noise_suppression {
        Toggle::On => true,
        Toggle::Off => false,
        Toggle::Auto => media.audio_in.starts_with("device"),
    };
    Some(media)
}

fn video_spec_arg(spec: &str) -> Result<VideoSpec, String> {
    spec.parse()
}

fn screen_spec_arg(spec: &str) -> Result<ScreenSpec, String> {
    spec.parse()
}

fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("org", "Conclave", "conclave").map(|d| d.data_dir().to_owned())
}

/// The data directory and the store key source from the flags; on a usage error, prints
/// it and returns the exit code.
fn storage(args: &Args, out: Output) -> Result<(PathBuf, KeySource), i32> {
    let Some(data_dir) = args.data_dir.clone().or_else(default_data_dir) else {
        out.error(
            "usage",
            "no home directory to keep your identity in; pass --data-dir DIR",
        );
        return Err(EXIT_USAGE);
    };
    let source = key_source(args).and_then(|source| match source {
        // No flag: a passphrase typed at the terminal, if there is one.
        KeySource::Auto => Ok(cli::passphrase::from_terminal(&data_dir)?.unwrap_or(source)),
        source => Ok(source),
    });
    match source {
        Ok(source) => Ok((data_dir, source)),
        Err(message) => {
            out.error("usage", &message);
            Err(EXIT_USAGE)
        }
    }
}

/// Runs the desktop app; returns the exit code.
fn run_gui(args: &Args, started: std::time::Instant, out: Output) -> i32 {
    let (data_dir, store_key) = match storage(args, out) {
        Ok(storage) => storage,
        Err(code) => return code,
    };
    if !gui::display_available() {
        out.error(
            "no_display",
            "no graphical display (DISPLAY or WAYLAND_DISPLAY is unset); use the commands of `conclave --help`",
        );
        return EXIT_USAGE;
    }
    let options = gui::app::Options {
        data_dir,
        name: args.name.clone(),
        listen: args.listen.clone(),
        mdns: !args.no_mdns,
        audio_in: args.audio_in.clone(),
        audio_out: args.audio_out.clone(),
        media_bind: args.media_bind.clone(),
        noise_suppression: match args.noise_suppression {
            Toggle::On => Some(true),
            Toggle::Off => Some(false),
            Toggle::Auto => None,
        },
        relay_only: args.relay_only,
        video_in: args.video_in.clone().or_else(gui::default_camera),
        started,
        store_key,
    };
    match gui::run(options) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            out.error("gui", &format!("the desktop app could not run: {err}"));
            EXIT_FAILURE
        }
    }
}

async fn run(args: Args, command: Command, out: Output) -> i32 {
    let (data_dir, store_key) = match storage(&args, out) {
        Ok(storage) => storage,
        Err(code) => return code,
    };
    let (mode, relays, duration) = match command {
        Command::Gui => return EXIT_USAGE,
        Command::Id => {
            return match cli::id::run(&data_dir, &store_key, out) {
                Ok(()) => EXIT_OK,
                Err(err) => {
                    out.error("store", &err.to_string());
                    EXIT_FAILURE
                }
            };
        }
        Command::History { meeting } => {
            return cli::history::run(&data_dir, &store_key, meeting.as_deref(), out);
        }
        Command::Forget { meeting } => {
            return cli::history::forget(&data_dir, &store_key, &meeting, out);
        }
        Command::Demo {
            participants,
            seconds,
        } => {
            return match cli::demo::run(participants, seconds, out).await {
                Ok(()) => EXIT_OK,
                Err(err) => {
                    out.error("demo", &format!("{err:#}"));
                    EXIT_FAILURE
                }
            };
        }
        Command::New {
            lobby,
            relays,
            duration,
        } => (cli::meeting::Mode::Create { lobby }, relays, duration),
        Command::Join {
            invite,
            relays,
            duration,
        } => match invite.parse::<Invite>() {
            Ok(invite) => (cli::meeting::Mode::Join(invite), relays, duration),
            Err(err) => {
                out.error("bad_invite", &format!("this invite cannot be used: {err}"));
                return EXIT_USAGE;
            }
        },
    };
    start_meeting(&args, data_dir, store_key, relays, duration, mode, out).await
}

/// Starts a client with the global flags of `args` and runs `mode` until the meeting ends.
async fn start_meeting(
    args: &Args,
    data_dir: PathBuf,
    store_key: KeySource,
    relays: Vec<Multiaddr>,
    duration: Option<Duration>,
    mode: cli::meeting::Mode,
    out: Output,
) -> i32 {
    let mut config = Config::new(data_dir)
        .with_store_key(store_key)
        .with_relays(relays)
        .with_mdns(!args.no_mdns)
        .with_relay_only(args.relay_only);
    if !args.listen.is_empty() {
        config = config.with_listen(args.listen.clone());
    }
    if let Some(name) = &args.name {
        config = config.with_name(name.clone());
    }
    if let Some(media) = media_config(args) {
        config = config.with_media(media);
    }
    let (client, events) = match Client::start(config).await {
        Ok(started) => started,
        Err(err) => {
            out.error("startup", &format!("cannot start: {err}"));
            return EXIT_FAILURE;
        }
    };
    cli::meeting::run(client, events, mode, duration, out).await
}
