//! `conclave new` and `conclave join`: stay in a meeting, print what happens, read commands
//! from stdin.
//!
//! stdin: `/leave` (or end of input) leaves; `/quit` is the same; `/kick PEER` asks for a
//! member's removal (honoured for the host); `/approve PEER` lets a joiner waiting in the
//! lobby in (host); `/members` lists the members; any other line is sent as chat,
//! end-to-end encrypted in the meeting's MLS group.

use std::collections::BTreeMap;
use std::time::Duration;

use conclave_core::{
    AlertKind, Client, Event, Events, Invite, MeetingEvent, MeetingId, PeerId, ScreenSpec,
    VideoKind, VideoSendReport, VideoStats,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::output::Output;
use super::{EXIT_FAILURE, EXIT_OK, EXIT_REFUSED};
use crate::media::{self, Connection, MediaSink, Stats};

/// Whether we create the meeting or join one.
#[derive(Debug)]
pub(crate) enum Mode {
    /// Create a meeting; with `lobby`, each joiner waits for our `/approve`.
    Create {
        lobby: bool,
    },
    Join(Invite),
}

/// Announces identity and addresses, enters the meeting and runs until it ends.
/// Returns the process exit code.
pub(crate) async fn run(
    client: Client,
    mut events: Events,
    mode: Mode,
    duration: Option<Duration>,
    out: Output,
) -> i32 {
    announce(&client, out);
    if let Err(code) = enter(&client, mode, out).await {
        return code;
    }
    let mut session = Session {
        client,
        out,
        members: BTreeMap::new(),
        history_shown: false,
        leaving: false,
    };
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let stop_at = duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        let until_stop = async {
            match stop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let leaving = session.leaving;
        tokio::select! {
            event = events.next() => {
                if let Some(code) = session.on_event(event).await {
                    return code;
                }
            }
            line = stdin.next_line(), if stdin_open && !leaving => match line {
                Ok(Some(line)) => session.on_line(line.trim()).await,
                Ok(None) | Err(_) => {
                    stdin_open = false;
                    // With a duration, the meeting outlives its input (scripts, tests).
                    if duration.is_none() {
                        session.leave().await;
                    }
                }
            },
            () = until_stop, if !leaving => session.leave().await,
            _ = tokio::signal::ctrl_c(), if !leaving => session.leave().await,
        }
    }
}

/// Prints who we are and where we listen.
fn announce(client: &Client, out: Output) {
    let peer_id = client.peer_id().to_string();
    let safety = client.safety_number().to_string();
    out.event(
        "identity",
        json!({ "peer_id": peer_id, "safety_number": safety }),
        || {
            format!(
                "you are {} ({peer_id}), safety number {safety}",
                client.name()
            )
        },
    );
    let addrs: Vec<String> = client
        .listen_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    out.event("listening", json!({ "addrs": addrs }), || {
        format!("listening on {}", addrs.join(", "))
    });
}

/// Creates the meeting (printing its invite) or starts joining one; the exit code if that
/// failed.
async fn enter(client: &Client, mode: Mode, out: Output) -> Result<(), i32> {
    match mode {
        Mode::Create { lobby } => match client.create_meeting(lobby).await {
            Ok(invite) => {
                let uri = invite.to_uri();
                out.event("invite", json!({ "invite": uri }), || {
                    format!("invite (share it only with the people you invite):\n{uri}")
                });
                Ok(())
            }
            Err(err) => {
                out.error(
                    "create_failed",
                    &format!("could not create the meeting: {err}"),
                );
                Err(EXIT_FAILURE)
            }
        },
        Mode::Join(invite) => {
            if let Err(err) = client.join(invite).await {
                out.error("join_failed", &format!("could not start joining: {err}"));
                return Err(EXIT_FAILURE);
            }
            out.event("joining", json!({}), || "finding members…".to_owned());
            Ok(())
        }
    }
}

/// The meeting as the CLI follows it: the roster for `/members`, and whether we are on
/// our way out.
struct Session {
    client: Client,
    out: Output,
    members: BTreeMap<PeerId, String>,
    /// History is shown once: a second `joined` (back in after our network dropped) is
    /// the same conversation, already on screen.
    history_shown: bool,
    /// We asked to leave: stdin and the timers are no longer read.
    leaving: bool,
}

impl Session {
    /// Asks the core to leave (once); the meeting ends with its `left` event.
    async fn leave(&mut self) {
        if !std::mem::replace(&mut self.leaving, true) {
            let _ = self.client.leave().await;
        }
    }

    /// Handles one event of the core; the exit code when the meeting is over for us.
    async fn on_event(&mut self, event: Option<Event>) -> Option<i32> {
        let out = self.out;
        match event {
            Some(Event::Meeting(event)) => {
                match &event {
                    MeetingEvent::Joined { meeting_id, .. }
                        if !std::mem::replace(&mut self.history_shown, true) =>
                    {
                        show_history(&self.client, *meeting_id, out).await;
                    }
                    MeetingEvent::MemberJoined { peer_id, name } => {
                        self.members.insert(*peer_id, name.clone());
                    }
                    MeetingEvent::MemberLeft { peer_id, .. } => {
                        self.members.remove(peer_id);
                    }
                    _ => {}
                }
                return report(&event, out);
            }
            Some(Event::Warning { message }) => out.error("warning", &message),
            Some(Event::Media(event)) => media::dispatch(event, &mut Printer(out)),
            Some(Event::ControlPath {
                peer_id,
                path,
                remote,
            }) => out.event(
                "control_path",
                json!({ "peer_id": peer_id.to_string(), "path": path, "remote": remote.to_string() }),
                || format!("control plane with {peer_id}: {path} ({remote})"),
            ),
            Some(Event::Lagged { missed }) => {
                // We fell behind: the roster we kept may be stale; read it again.
                if let Ok(now) = self.client.members().await {
                    self.members = now.into_iter().collect();
                }
                out.event("lagged", json!({ "missed": missed }), || {
                    format!("{missed} events were missed; roster re-read")
                });
            }
            Some(_) => {}
            None => {
                out.error("internal", "the client stopped unexpectedly");
                return Some(EXIT_FAILURE);
            }
        }
        None
    }

    /// Handles one line typed on stdin: a command, or chat.
    async fn on_line(&mut self, line: &str) {
        let (client, out) = (&self.client, self.out);
        match line {
            "" => {}
            "/leave" | "/quit" => self.leave().await,
            "/mute" | "/unmute" => {
                let muted = line == "/mute";
                match client.set_muted(muted).await {
                    Ok(()) => out.event("muted", json!({ "muted": muted }), || {
                        if muted { "microphone off" } else { "microphone on" }.to_owned()
                    }),
                    Err(err) => out.error("mute", &err.to_string()),
                }
            }
            "/camera on" | "/camera off" => {
                let on = line == "/camera on";
                match client.set_camera(on).await {
                    Ok(()) => out.event("camera", json!({ "on": on }), || {
                        if on { "camera on" } else { "camera off" }.to_owned()
                    }),
                    Err(err) => out.error("camera", &err.to_string()),
                }
            }
            "/incoming-video on" | "/incoming-video off" => {
                let on = line == "/incoming-video on";
                match client.set_incoming_video(on).await {
                    Ok(()) => out.event("incoming_video", json!({ "on": on }), || {
                        if on {
                            "receiving the others' video"
                        } else {
                            "no incoming video: the others send you none (audio and chat go on)"
                        }
                        .to_owned()
                    }),
                    Err(err) => out.error("incoming_video", &err.to_string()),
                }
            }
            "/share off" => {
                if let Err(err) = client.share_screen(None).await {
                    out.error("share", &err.to_string());
                }
            }
            share if share == "/share on" || share.starts_with("/share on ") => {
                let monitor = share.trim_start_matches("/share on").trim();
                let spec = if monitor.is_empty() {
                    Ok(ScreenSpec::default())
                } else {
                    monitor.parse::<ScreenSpec>()
                };
                // The outcome comes as a `screen_share` event, or an error saying why.
                let result = match spec {
                    Ok(spec) => client.share_screen(Some(spec)).await.map_err(|e| e.to_string()),
                    Err(err) => Err(err),
                };
                if let Err(err) = result {
                    out.error("share", &err);
                }
            }
            "/members" => {
                for (peer, name) in &self.members {
                    out.event(
                        "member",
                        json!({ "peer_id": peer.to_string(), "name": name }),
                        || format!("  {name} ({peer})"),
                    );
                }
            }
            command if command.starts_with("/kick") => match peer_argument(command, "/kick") {
                Some(peer) => {
                    if let Err(err) = client.kick(peer).await {
                        out.error("kick", &format!("cannot remove {peer}: {err}"));
                    }
                }
                None => out.error("usage", "usage: /kick PEER_ID (see /members)"),
            },
            command if command.starts_with("/resend") => {
                match command.trim_start_matches("/resend").trim().parse::<u64>() {
                    Ok(seq) => {
                        if let Err(err) = client.resend_chat(seq).await {
                            out.error("chat", &format!("cannot send #{seq} again: {err}"));
                        }
                    }
                    Err(_) => out.error("usage", "usage: /resend ID (the id of a chat_failed event)"),
                }
            }
            command if command.starts_with("/approve") => {
                match peer_argument(command, "/approve") {
                    Some(peer) => {
                        if let Err(err) = client.approve(peer).await {
                            out.error("approve", &format!("cannot let {peer} in: {err}"));
                        }
                    }
                    None => out.error(
                        "usage",
                        "usage: /approve PEER_ID (as shown in the lobby event)",
                    ),
                }
            }
            other if other.starts_with('/') => out.error("usage", &format!("unknown command {other:?}; available: /leave /members /mute /unmute /camera on|off /incoming-video on|off /share on [N]|off /kick PEER /approve PEER /resend ID")),
            text => {
                if let Err(err) = client.send_chat(text).await {
                    out.error("chat", &format!("not sent: {err}"));
                }
            }
        }
    }
}

/// The peer id typed after `/name` (as in `/kick PEER`), if it is one.
fn peer_argument(command: &str, name: &str) -> Option<PeerId> {
    command.trim_start_matches(name).trim().parse().ok()
}

/// Prints media-plane events.
struct Printer(Output);

impl MediaSink for Printer {
    fn connection(&mut self, connection: Connection) {
        let Connection {
            peer_id,
            state,
            path,
            previous_path,
            since_join_ms,
            rtt_ms,
            ice_restarts,
        } = connection;
        let rtt = rtt_ms.map_or(String::new(), |rtt| format!(", {rtt:.1} ms"));
        let switch = previous_path
            .as_deref()
            .map_or(String::new(), |previous| format!(", was {previous}"));
        self.0.event(
            "connection",
            json!({
                "peer_id": peer_id.to_string(),
                "state": state,
                "path": path,
                "previous_path": previous_path,
                "since_join_ms": since_join_ms,
                "rtt_ms": rtt_ms,
                "ice_restarts": ice_restarts,
            }),
            || format!("media with {peer_id}: {state} ({path}{switch}{rtt})"),
        );
    }

    fn stats(&mut self, stats: Stats) {
        let Stats {
            peer_id,
            rx_frames,
            lost_frames,
            recovered_frames,
            decrypt_failures,
            jitter_ms,
            level_dbfs,
            rtt_ms,
            send_estimate_kbps,
            send_loss,
        } = stats;
        self.0.event(
            "media",
            json!({ "peer_id": peer_id.to_string(), "rx_frames": rx_frames, "lost_frames": lost_frames, "recovered_frames": recovered_frames, "decrypt_failures": decrypt_failures, "jitter_ms": jitter_ms, "level_dbfs": level_dbfs, "rtt_ms": rtt_ms, "send_estimate_kbps": send_estimate_kbps, "send_loss": send_loss }),
            || format!("audio from {peer_id}: {rx_frames} frames, {lost_frames} lost ({recovered_frames} recovered), jitter {jitter_ms:.1} ms"),
        );
    }

    fn audio_started(&mut self, peer_id: PeerId) {
        self.0.event(
            "audio_started",
            json!({ "peer_id": peer_id.to_string() }),
            || format!("hearing {peer_id}"),
        );
    }

    fn video_started(&mut self, peer_id: PeerId, kind: VideoKind, width: u32, height: u32) {
        self.0.event(
            "video_started",
            json!({ "peer_id": peer_id.to_string(), "kind": kind.as_str(), "width": width, "height": height }),
            || match kind {
                VideoKind::Camera => format!("seeing {peer_id} ({width}x{height})"),
                VideoKind::Screen => {
                    format!("seeing the screen {peer_id} shares ({width}x{height})")
                }
            },
        );
    }

    fn video_stopped(&mut self, peer_id: PeerId, kind: VideoKind) {
        self.0.event(
            "video_stopped",
            json!({ "peer_id": peer_id.to_string(), "kind": kind.as_str() }),
            || format!("{peer_id} stopped sharing its screen"),
        );
    }

    fn screen_shared(&mut self, monitor: u32, width: u32, height: u32) {
        self.0.event(
            "screen_share",
            json!({ "on": true, "monitor": monitor, "width": width, "height": height }),
            || format!("you are sharing your screen (monitor {monitor}, {width}x{height}); /share off stops"),
        );
    }

    fn screen_share_stopped(&mut self, error: Option<String>) {
        match error {
            Some(error) => self.0.error("share", &error),
            None => self.0.event("screen_share", json!({ "on": false }), || {
                "you stopped sharing your screen".to_owned()
            }),
        }
    }

    fn video(&mut self, stats: VideoStats) {
        let VideoStats {
            peer_id,
            kind,
            report,
            counts,
        } = stats;
        let latency = report
            .latency_ms
            .map(|(p50, p95)| json!({ "p50": p50, "p95": p95 }));
        let psnr = report
            .psnr_db
            .map(|(min, mean)| json!({ "min": finite(min), "mean": finite(mean) }));
        let stages = report.stages.map(|s| {
            json!({ "assembly": s.assembly_ms, "waiting": s.waiting_ms, "decode": s.decode_ms })
        });
        self.0.event(
            "video",
            json!({
                "peer_id": peer_id.to_string(),
                "kind": kind.as_str(),
                "fps": report.fps,
                "width": report.width,
                "height": report.height,
                "frames": report.frames,
                "kbps": report.kbps,
                "freezes": report.freezes,
                "longest_gap_ms": report.longest_gap.as_millis() as u64,
                "lost": report.lost,
                "latency_ms": latency,
                "psnr_db": psnr,
                "stages_ms": stages,
                "decoded": counts.decoded,
                "incomplete": counts.incomplete,
                "concealed": counts.concealed,
                "undecryptable": counts.undecryptable,
                "undecodable": counts.undecodable,
                "malformed_packets": counts.malformed_packets,
                "keyframe_requests": counts.keyframe_requests,
            }),
            || {
                let latency = report
                    .latency_ms
                    .map(|(p50, p95)| format!(", latency {p50}/{p95} ms"))
                    .unwrap_or_default();
                let psnr = report
                    .psnr_db
                    .map(|(_, mean)| format!(", PSNR {mean:.1} dB"))
                    .unwrap_or_default();
                format!(
                    "{} from {peer_id}: {:.1} fps {}x{}, {} kbit/s, {} freezes{latency}{psnr}",
                    match kind {
                        VideoKind::Camera => "video",
                        VideoKind::Screen => "shared screen",
                    },
                    report.fps,
                    report.width,
                    report.height,
                    report.kbps,
                    report.freezes
                )
            },
        );
    }

    fn video_sent(&mut self, report: VideoSendReport) {
        let encode = report
            .encode_ms
            .map(|(p50, p95)| json!({ "p50": p50, "p95": p95 }));
        self.0.event(
            "video_sent",
            json!({
                "kind": report.kind.as_str(),
                "fps": report.fps,
                "width": report.width,
                "height": report.height,
                "frames": report.frames,
                "keyframes": report.keyframes,
                "kbps": report.kbps,
                "encode_ms": encode,
                "not_sent": report.not_sent,
                "target_kbps": report.target_kbps,
                "cpu_limited": report.cpu_limited,
            }),
            || {
                let encode = report
                    .encode_ms
                    .map(|(p50, _)| format!(", capture to sealed {p50:.1} ms"))
                    .unwrap_or_default();
                format!(
                    "sending {}: {:.1} fps {}x{}, {} kbit/s{encode}",
                    match report.kind {
                        VideoKind::Camera => "video",
                        VideoKind::Screen => "our screen",
                    },
                    report.fps,
                    report.width,
                    report.height,
                    report.kbps
                )
            },
        );
    }

    fn warning(&mut self, message: String) {
        self.0.error("media", &message);
    }
}

/// A PSNR for JSON: identical pictures give infinity, which JSON cannot carry (`null`).
fn finite(db: f64) -> Option<f64> {
    db.is_finite().then_some(db)
}

/// Prints what was said in this meeting before (this installation's stored history).
async fn show_history(client: &Client, meeting: MeetingId, out: Output) {
    match client.history(meeting).await {
        Ok(lines) => {
            for line in lines {
                out.event(
                    "chat",
                    json!({ "from": line.from, "name": line.name, "text": line.text, "unix_ms": line.unix_ms, "history": true }),
                    || format!("[earlier] {}: {}", line.name, line.text),
                );
            }
        }
        Err(err) => out.error("history", &format!("cannot read the chat history: {err}")),
    }
}

/// Prints one meeting event; returns the exit code when the meeting is over for us.
fn report(event: &MeetingEvent, out: Output) -> Option<i32> {
    match event {
        MeetingEvent::Joined { .. }
        | MeetingEvent::Epoch { .. }
        | MeetingEvent::Waiting
        | MeetingEvent::Reconnecting
        | MeetingEvent::Reconnected => report_progress(event, out),
        MeetingEvent::Chat { .. }
        | MeetingEvent::ChatSent { .. }
        | MeetingEvent::ChatDelivered { .. }
        | MeetingEvent::ChatFailed { .. } => report_chat(event, out),
        MeetingEvent::Knocking { .. }
        | MeetingEvent::LobbyLeft { .. }
        | MeetingEvent::MemberJoined { .. }
        | MeetingEvent::MemberLeft { .. }
        | MeetingEvent::MemberMuted { .. } => report_member(event, out),
        MeetingEvent::Alert { .. } => report_alert(event, out),
        MeetingEvent::InviteChanged { invite } => {
            let uri = invite.to_uri();
            out.event("invite", json!({ "invite": uri, "rotated": true }), || {
                format!(
                    "a member was removed, so the meeting's invite changed: every invite sent before no longer works. The new invite (share it only with the people you invite):\n{uri}"
                )
            });
        }
        MeetingEvent::Removed { .. }
        | MeetingEvent::JoinRefused
        | MeetingEvent::JoinTimedOut
        | MeetingEvent::Left => return report_end(event, out),
        other => tracing::debug!(?other, "unhandled meeting event"),
    }
    None
}

/// Prints an alert: a member did something honest members never do (e.g. a fork).
fn report_alert(event: &MeetingEvent, out: Output) {
    if let MeetingEvent::Alert {
        kind,
        peer_id,
        epoch,
    } = event
    {
        let mut fields =
            json!({ "kind": kind.as_str(), "peer_id": peer_id.to_string(), "epoch": epoch });
        if let AlertKind::Commit(violation) = kind {
            fields["rule"] = json!(violation.as_str());
        }
        out.event(
            "alert",
            fields,
            || match kind {
                AlertKind::Fork => format!(
                    "ALERT: {peer_id} holds another group at epoch {epoch} — the meeting is split (someone sent different commits to different members); compare security codes"
                ),
                AlertKind::Commit(violation) => format!(
                    "ALERT: {peer_id} {} at epoch {epoch}; its change was refused. To remove it: /kick {peer_id}",
                    violation.describe()
                ),
                _ => format!("ALERT ({}): {peer_id} at epoch {epoch}", kind.as_str()),
            },
        );
    }
}

/// Prints where we stand in the meeting: in, keys rotated, waiting, reconnecting.
fn report_progress(event: &MeetingEvent, out: Output) {
    match event {
        MeetingEvent::Joined {
            meeting_id,
            epoch,
            security_code,
        } => {
            let code = security_code.to_string();
            out.event("joined", json!({ "meeting_id": meeting_id.to_string(), "epoch": epoch, "security_code": code }), || {
                format!("in meeting {meeting_id} — security code {code} (compare it with the others: equal codes mean nobody is in the middle)")
            });
        }
        MeetingEvent::Epoch {
            epoch,
            security_code,
            members,
        } => {
            let code = security_code.to_string();
            let members: Vec<String> = members.iter().map(ToString::to_string).collect();
            out.event(
                "epoch",
                json!({ "epoch": epoch, "security_code": code, "members": members }),
                || {
                    format!(
                        "keys rotated (epoch {epoch}, {} members) — security code {code}",
                        members.len()
                    )
                },
            );
        }
        MeetingEvent::Waiting => {
            out.event("waiting", json!({}), || {
                "waiting for the host to let you in…".to_owned()
            });
        }
        MeetingEvent::Reconnecting => {
            out.event("reconnecting", json!({}), || {
                "connection lost: reconnecting…".to_owned()
            });
        }
        MeetingEvent::Reconnected => {
            out.event("reconnected", json!({}), || "reconnected".to_owned());
        }
        _ => {}
    }
}

/// Prints chat lines and how far ours got.
fn report_chat(event: &MeetingEvent, out: Output) {
    match event {
        MeetingEvent::Chat {
            from,
            name,
            text,
            unix_ms,
        } => {
            out.event(
                "chat",
                json!({ "from": from.to_string(), "name": name, "text": text, "unix_ms": unix_ms }),
                || format!("{name}: {text}"),
            );
        }
        MeetingEvent::ChatSent {
            seq,
            text,
            unix_ms,
            resumed,
            ..
        } => {
            out.event(
                "chat_sent",
                json!({ "id": seq, "text": text, "unix_ms": unix_ms, "resumed": resumed }),
                || {
                    let again = if *resumed {
                        ", unsent before the restart"
                    } else {
                        ""
                    };
                    format!("(you, #{seq}, sending{again}): {text}")
                },
            );
        }
        MeetingEvent::ChatDelivered { seq } => {
            out.event("chat_delivered", json!({ "id": seq }), || {
                format!("#{seq} delivered to everyone")
            });
        }
        MeetingEvent::ChatFailed { seq, peers } => {
            let peers: Vec<String> = peers.iter().map(ToString::to_string).collect();
            out.event("chat_failed", json!({ "id": seq, "peers": peers }), || {
                format!(
                    "#{seq} did not reach {} member(s) — type /resend {seq} to try again",
                    peers.len()
                )
            });
        }
        _ => {}
    }
}

/// Prints who arrived, left, knocked or muted.
fn report_member(event: &MeetingEvent, out: Output) {
    match event {
        MeetingEvent::Knocking { peer_id, name } => {
            out.event("lobby", json!({ "peer_id": peer_id.to_string(), "name": name }), || {
                format!("{name} ({peer_id}) is waiting in the lobby — type /approve {peer_id} to let them in")
            });
        }
        MeetingEvent::LobbyLeft { peer_id, name } => {
            out.event(
                "lobby_left",
                json!({ "peer_id": peer_id.to_string(), "name": name }),
                || format!("{name} ({peer_id}) is no longer waiting in the lobby"),
            );
        }
        MeetingEvent::MemberJoined { peer_id, name } => {
            out.event(
                "member_joined",
                json!({ "peer_id": peer_id.to_string(), "name": name }),
                || format!("{name} ({peer_id}) joined"),
            );
        }
        MeetingEvent::MemberLeft {
            peer_id,
            name,
            reason,
        } => {
            out.event(
                "member_left",
                json!({ "peer_id": peer_id.to_string(), "name": name, "reason": reason.as_str() }),
                || format!("{name} ({peer_id}) left: {}", reason.as_str()),
            );
        }
        MeetingEvent::MemberMuted { peer_id, muted } => {
            out.event(
                "member_muted",
                json!({ "peer_id": peer_id.to_string(), "muted": muted }),
                || {
                    let state = if *muted { "muted" } else { "unmuted" };
                    format!("{peer_id} {state} their microphone")
                },
            );
        }
        _ => {}
    }
}

/// Prints why the meeting is over for us; the exit code.
fn report_end(event: &MeetingEvent, out: Output) -> Option<i32> {
    match event {
        MeetingEvent::Removed { reason } => {
            out.event("left", json!({ "reason": reason.as_str() }), || {
                format!("you were removed from the meeting ({})", reason.as_str())
            });
            return Some(EXIT_OK);
        }
        MeetingEvent::JoinRefused => {
            out.error(
                "join_refused",
                "the meeting refused this invite: its secret is wrong or it has been altered",
            );
            return Some(EXIT_REFUSED);
        }
        MeetingEvent::JoinTimedOut => {
            out.error("no_members", "no member of this meeting could be reached; check the invite and your network or relay");
            return Some(EXIT_FAILURE);
        }
        MeetingEvent::Left => {
            out.event("left", json!({ "reason": "left" }), || {
                "you left the meeting".to_owned()
            });
            return Some(EXIT_OK);
        }
        _ => {}
    }
    None
}
