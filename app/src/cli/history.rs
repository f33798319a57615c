//! `conclave history [MEETING]`: what was said in a meeting, from this installation's store
//! (or the list of remembered meetings).

use std::path::Path;

use conclave_core::invite::MeetingId;
use conclave_core::store::Store;
use serde_json::json;

use super::output::Output;
use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// Prints the history of `meeting`, or lists meetings. Returns the exit code.
pub(crate) fn run(data_dir: &Path, meeting: Option<&str>, out: Output) -> i32 {
    let store = match Store::open(data_dir) {
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
