//! `conclave history [MEETING]`: what was said in a meeting, from this installation's store
//! (or the list of remembered meetings); `conclave forget MEETING`: remove a meeting's
//! history and invite for good (the store is rewritten, see `conclave_core::store`).

use std::path::Path;

use conclave_core::{KeySource, MeetingId, Store};
use serde_json::json;

use super::output::Output;
use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// Prints the history of `meeting`, or lists meetings. Returns the exit code.
pub(crate) fn run(data_dir: &Path, source: &KeySource, meeting: Option<&str>, out: Output) -> i32 {
    let store = match Store::open(data_dir, source) {
        Ok(store) => store,
        Err(err) => {
            out.error("store", &err.to_string());
            return EXIT_FAILURE;
        }
    };
    let Some(meeting) = meeting else {
        return match store.meetings() {
            Ok(meetings) => {
                for (id, record) in meetings {
                    out.event("meeting", json!({ "meeting_id": id.to_string(), "last_seen_unix_ms": record.last_seen_unix_ms }), || {
                        format!("{id}")
                    });
                }
                EXIT_OK
            }
            Err(err) => {
                out.error("store", &err.to_string());
                EXIT_FAILURE
            }
        };
    };
    let id: MeetingId = match meeting.parse() {
        Ok(id) => id,
        Err(err) => {
            out.error("usage", &err.to_string());
            return EXIT_USAGE;
        }
    };
    match store.chat_history(id) {
        Ok(lines) => {
            for line in lines {
                out.event("chat", json!({ "from": line.from, "name": line.name, "text": line.text, "unix_ms": line.unix_ms, "history": true }), || {
                    format!("{}: {}", line.name, line.text)
                });
            }
            EXIT_OK
        }
        Err(err) => {
            out.error("store", &err.to_string());
            EXIT_FAILURE
        }
    }
}

/// Forgets `meeting` (history and invite), rewriting the store. Returns the exit code.
pub(crate) fn forget(data_dir: &Path, source: &KeySource, meeting: &str, out: Output) -> i32 {
    let id: MeetingId = match meeting.parse() {
        Ok(id) => id,
        Err(err) => {
            out.error("usage", &err.to_string());
            return EXIT_USAGE;
        }
    };
    match Store::forget_meeting(data_dir, source, id) {
        Ok(known) => {
            out.event(
                "forgotten",
                json!({ "meeting_id": id.to_string(), "known": known }),
                || {
                    if known {
                        format!("forgot meeting {id}")
                    } else {
                        format!("nothing was stored about meeting {id}")
                    }
                },
            );
            EXIT_OK
        }
        Err(err) => {
            out.error("store", &err.to_string());
            EXIT_FAILURE
        }
    }
}
