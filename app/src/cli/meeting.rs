//! `conclave new` and `conclave join`: stay in a meeting, print what happens, read commands
//! from stdin.
//!
//! stdin: `/leave` (or end of input) leaves; `/quit` is the same. Other lines are chat,
//! which arrives with the MLS group and is refused with a clear message until then.

use std::time::Duration;

use conclave_core::invite::Invite;
use conclave_core::meeting::MeetingEvent;
use conclave_core::{Client, Event, Events};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::output::Output;
use super::{EXIT_FAILURE, EXIT_OK, EXIT_REFUSED};

/// Whether we create the meeting or join one.
#[derive(Debug)]
pub(crate) enum Mode {
    Create,
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

    match mode {
        Mode::Create => match client.create_meeting().await {
            Ok(invite) => {
                let uri = invite.to_uri();
                out.event("invite", json!({ "invite": uri }), || {
                    format!("invite (share it only with the people you invite):\n{uri}")
                });
            }
            Err(err) => {
                out.error(
                    "create_failed",
                    &format!("could not create the meeting: {err}"),
                );
                return EXIT_FAILURE;
            }
        },
        Mode::Join(invite) => {
            if let Err(err) = client.join(invite).await {
                out.error("join_failed", &format!("could not start joining: {err}"));
                return EXIT_FAILURE;
            }
            out.event("joining", json!({}), || "finding members…".to_owned());
        }
    }

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let stop_at = duration.map(|d| tokio::time::Instant::now() + d);
    let mut leaving = false;
    loop {
        let until_stop = async {
            match stop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.next() => {
                let Some(Event::Meeting(event)) = event else {
                    out.error("internal", "the client stopped unexpectedly");
                    return EXIT_FAILURE;
                };
                if let Some(code) = report(&event, out) {
                    return code;
                }
            }
            line = stdin.next_line(), if stdin_open && !leaving => match line {
                Ok(Some(line)) => match line.trim() {
                    "" => {}
                    "/leave" | "/quit" => {
                        leaving = true;
                        let _ = client.leave().await;
                    }
                    other if other.starts_with('/') => out.error("usage", &format!("unknown command {other:?}; available: /leave")),
                    _ => out.error("unsupported", "chat is not available yet: it will travel inside the MLS group"),
                },
                Ok(None) | Err(_) => {
                    stdin_open = false;
                    if duration.is_none() {
                        leaving = true;
                        let _ = client.leave().await;
                    }
                }
            },
            () = until_stop, if !leaving => {
                leaving = true;
                let _ = client.leave().await;
            }
            _ = tokio::signal::ctrl_c(), if !leaving => {
                leaving = true;
                let _ = client.leave().await;
            }
        }
    }
}

/// Prints one meeting event; returns the exit code when the meeting is over for us.
fn report(event: &MeetingEvent, out: Output) -> Option<i32> {
    match event {
        MeetingEvent::Joined { meeting_id } => {
            out.event(
                "joined",
                json!({ "meeting_id": meeting_id.to_string() }),
                || format!("in meeting {meeting_id}"),
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
            out.event("left", json!({}), || "you left the meeting".to_owned());
            return Some(EXIT_OK);
        }
        other => tracing::debug!(?other, "unhandled meeting event"),
    }
    None
}
