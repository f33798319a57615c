//! Shared harness of Conclave's system tests: real `conclave` and `conclave-relay`
//! processes on loopback (or in network namespaces), driven through their `--json` output.
//!
//! Every wait is bounded; every process is killed when its [`Proc`] is dropped, so a
//! failing test leaves nothing running.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cgroup;
pub mod lan_audio;
pub mod nat;
pub mod netns;
pub mod turn_client;
pub mod wan;
pub mod xvfb;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// How long a step with no behavioural deadline may take before the test gives up: long
/// enough that a loaded two-core machine never fails a test on timing luck, short enough
/// that a hung process does not hang the suite. Bounds that an issue named (10 s discovery
/// and presence, 5 s committer takeover, the real-network figures) stay in their tests.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Where the workspace's binaries are: `$CONCLAVE_BIN_DIR`, or the target directory this
/// test executable was built into.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CONCLAVE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // Tests live in target/<profile>/deps/, bins (the bench) in target/<profile>/.
    let dir = exe.parent().expect("an executable lives in a directory");
    if dir.ends_with("deps") {
        dir.parent().expect("deps has a parent").to_owned()
    } else {
        dir.to_owned()
    }
}

/// Path of a workspace binary, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// A running process whose stdout is parsed as JSON lines.
#[derive(Debug)]
pub struct Proc {
    /// Label for messages.
    pub label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every JSON event seen so far, in order.
    pub seen: Vec<Value>,
    /// Non-JSON stdout lines seen so far.
    pub text: Vec<String>,
    stderr_path: PathBuf,
}

impl Proc {
    /// Spawns `program args...` with stdout piped, stderr to a log file in `log_dir` (in
    /// `$CONCLAVE_TEST_LOG_DIR` instead if set: a test's temporary directory goes with it,
    /// and a failure worth studying needs the logs kept), and `RUST_LOG` from
    /// `$CONCLAVE_TEST_LOG` (default `info`) unless `command` sets it.
    pub fn spawn(label: &str, mut command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log_dir = std::env::var_os("CONCLAVE_TEST_LOG_DIR")
            .map_or_else(|| log_dir.to_path_buf(), PathBuf::from);
        std::fs::create_dir_all(&log_dir).context("create the log directory")?;
        let stderr_path = log_dir.join(format!("{label}.stderr.log"));
        let stderr = std::fs::File::create(&stderr_path).context("create stderr log")?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // A test may choose a process's log level itself.
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env(
                "RUST_LOG",
                std::env::var("CONCLAVE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        }
        let mut child = command.spawn().with_context(|| format!("spawn {label}"))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            label: label.to_owned(),
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            text: Vec::new(),
            stderr_path,
        })
    }

    /// Spawns `conclave --json --data-dir DIR <args>` listening on loopback only, mDNS off.
    pub fn conclave(label: &str, data_dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::conclave_with_env(label, data_dir, &[], args)
    }

    /// As [`Proc::conclave`], with `env` (name, value) set for the process (e.g. the X
    /// display whose screen it shares).
    pub fn conclave_with_env(
        label: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(bin("conclave"));
        command
            .args(loopback_client_args(data_dir, label))
            .args(args)
            .envs(env.iter().copied());
        Self::spawn(label, command, data_dir.parent().unwrap_or(data_dir))
    }

    /// Sends `/leave` to each of `procs`, then waits (each at most `limit`) for each to
    /// exit with status 0.
    pub fn leave_all(procs: &mut [&mut Proc], limit: Duration) -> anyhow::Result<()> {
        for proc in procs.iter_mut() {
            proc.send_line("/leave")?;
        }
        for proc in procs.iter_mut() {
            let status = proc.wait_exit(limit)?;
            anyhow::ensure!(
                status.code() == Some(0),
                "{} left with {status}",
                proc.label
            );
        }
        Ok(())
    }

    /// Spawns `conclave-relay --json` on loopback with its key in `data_dir` (libp2p, TURN
    /// and metrics on loopback ports chosen by the system).
    pub fn relay(label: &str, data_dir: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(bin("conclave-relay"));
        command.args(["--json", "--data-dir"]).arg(data_dir).args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--turn-listen",
            "127.0.0.1:0",
            "--turn-allow-loopback-peers",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        Self::spawn(label, command, data_dir.parent().unwrap_or(data_dir))
    }

    fn receive(&mut self, deadline: Instant) -> anyhow::Result<Option<Value>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(value) => {
                    self.seen.push(value.clone());
                    Ok(Some(value))
                }
                Err(_) => {
                    self.text.push(line);
                    Ok(None)
                }
            },
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("{} closed its stdout{}", self.label, self.stderr_tail())
            }
        }
    }

    /// Waits for an event satisfying `want` (the first one seen, or the next to come), at
    /// most `limit`.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        what: &str,
        want: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        self.wait_for_since(0, limit, what, want)
    }

    /// As [`Proc::wait_for`], among the events after the first `from` seen.
    pub fn wait_for_since(
        &mut self,
        from: usize,
        limit: Duration,
        what: &str,
        mut want: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        // Already seen?
        if let Some(found) = self.seen.iter().skip(from).find(|v| want(v)) {
            return Ok(found.clone());
        }
        while Instant::now() < deadline {
            if let Some(value) = self.receive(deadline)?
                && want(&value)
            {
                return Ok(value);
            }
        }
        bail!(
            "{} did not report {what} within {limit:?}; saw {:?}{}",
            self.label,
            self.seen,
            self.stderr_tail()
        )
    }

    /// Waits for an event named `name`.
    pub fn wait_event(&mut self, name: &str, limit: Duration) -> anyhow::Result<Value> {
        self.wait_for(limit, name, |v| v["event"] == name)
    }

    /// Waits for a `chat` event whose text is `text`.
    pub fn wait_chat(&mut self, text: &str, limit: Duration) -> anyhow::Result<Value> {
        self.wait_for(limit, &format!("the chat line {text:?}"), |v| {
            v["event"] == "chat" && v["text"] == text
        })
    }

    /// Reads whatever arrives within `limit` without expecting anything.
    pub fn drain_for(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.receive(deadline).is_err() {
                return;
            }
        }
    }

    /// Peer ids reported in `member_joined` events minus those in `member_left` events.
    pub fn members(&self) -> Vec<String> {
        let mut members: Vec<String> = Vec::new();
        for value in &self.seen {
            let peer = value["peer_id"].as_str().unwrap_or_default().to_owned();
            match value["event"].as_str() {
                Some("member_joined") if !members.contains(&peer) => members.push(peer),
                Some("member_left") => members.retain(|m| *m != peer),
                _ => {}
            }
        }
        members
    }

    /// Writes one line to the process's stdin.
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes stdin (the CLI then leaves the meeting).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL: the process vanishes without a goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `limit`, collecting all of its output.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Everything it printed, up to the end of its stdout (bounded: a child it
                // left behind could hold the pipe open).
                let drain_until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < drain_until {
                    if self.receive(drain_until).is_err() {
                        break;
                    }
                }
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {limit:?}{}",
                    self.label,
                    self.stderr_tail()
                );
            }
            // Read while waiting (this is also the polling interval).
            let _ = self.receive(Instant::now() + Duration::from_millis(20));
        }
    }

    /// The last lines of the process's stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("\n--- {} stderr (last lines) ---\n{tail}", self.label)
    }

    /// Everything the process wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Global flags every loopback test client uses: JSON, its own data dir (store key in a
/// 0600 key file: tests have no secret service and no passphrase), loopback listeners, no
/// mDNS (multicast would leave this host's namespace).
pub fn loopback_client_args(data_dir: &Path, name: &str) -> Vec<String> {
    vec![
        "--json".into(),
        "--insecure-key-file".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--name".into(),
        name.into(),
        "--no-mdns".into(),
        "--listen".into(),
        "/ip4/127.0.0.1/tcp/0".into(),
        "--listen".into(),
        "/ip4/127.0.0.1/udp/0/quic-v1".into(),
    ]
}

/// Spawns `conclave-relay --json` with `toml` as its config file (written into `dir`), its
/// key in `dir/relay`, libp2p on a loopback TCP port and metrics on a loopback port, plus
/// `extra` arguments; returns the process and its `listening` event.
pub fn relay_with_config(dir: &Path, toml: &str, extra: &[&str]) -> anyhow::Result<(Proc, Value)> {
    let data = dir.join("relay");
    std::fs::create_dir_all(&data).context("relay data dir")?;
    let config = dir.join("relay.toml");
    std::fs::write(&config, toml).context("relay config")?;
    let mut command = Command::new(bin("conclave-relay"));
    command
        .args(["--json", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(extra);
    let mut proc = Proc::spawn("relay", command, dir)?;
    let listening = proc.wait_event("listening", Duration::from_secs(30))?;
    Ok((proc, listening))
}

/// Starts a relay and returns it with its TCP multiaddr (with `/p2p/`).
pub fn start_relay(dir: &Path) -> anyhow::Result<(Proc, String)> {
    let mut relay = Proc::relay("relay", &dir.join("relay"))?;
    let listening = relay.wait_event("listening", Duration::from_secs(10))?;
    let addr = listening["addrs"]
        .as_array()
        .context("addrs is a list")?
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains("/tcp/"))
        .context("the relay listens on TCP")?
        .to_owned();
    Ok((relay, addr))
}

/// Starts `conclave new` and returns it with its invite and peer id.
pub fn start_host(
    dir: &Path,
    label: &str,
    extra: &[&str],
) -> anyhow::Result<(Proc, String, String)> {
    let mut args = vec!["new"];
    args.extend_from_slice(extra);
    let mut host = Proc::conclave(label, &dir.join(label), &args)?;
    let identity = host.wait_event("identity", Duration::from_secs(10))?;
    let invite = host.wait_event("invite", Duration::from_secs(10))?;
    Ok((
        host,
        invite["invite"]
            .as_str()
            .context("invite is a string")?
            .to_owned(),
        identity["peer_id"]
            .as_str()
            .context("peer_id is a string")?
            .to_owned(),
    ))
}

/// The peer id in an `identity` event already read from `proc`.
pub fn peer_id_of_seen(proc: &Proc) -> Option<String> {
    proc.seen
        .iter()
        .find(|v| v["event"] == "identity")
        .and_then(|v| v["peer_id"].as_str())
        .map(str::to_owned)
}

/// The peer id a process reported in its `identity` event.
pub fn peer_id_of(proc: &mut Proc) -> anyhow::Result<String> {
    let identity = proc.wait_event("identity", Duration::from_secs(10))?;
    Ok(identity["peer_id"]
        .as_str()
        .context("peer_id is a string")?
        .to_owned())
}

/// Whether a 20 ms frame of a recording carries the `hz` tone: a clear tone measures ≈ 20,
/// concealment noise and silence stay below 1.
pub fn tone_heard(frame: &[i16], hz: f64) -> bool {
    conclave_core::tones::tone_power(frame, hz) > 1.0
}

/// The 20 ms frames of a recording made by `--audio-out FILE.wav`.
pub fn wav_frames(path: &Path) -> anyhow::Result<Vec<Vec<i16>>> {
    use conclave_core::tones::{AudioSource, FRAME_SAMPLES, WavSource};
    let mut source = WavSource::open(path)?;
    let mut frames = Vec::new();
    let mut frame = [0i16; FRAME_SAMPLES];
    while source.next_frame(&mut frame) {
        frames.push(frame.to_vec());
    }
    Ok(frames)
}
