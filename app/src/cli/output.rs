//! Everything the CLI prints on stdout: one JSON object per line with `--json`, readable
//! sentences otherwise. Logs never come here (they go to stderr).

use std::io::Write;

use serde_json::{Value, json};

/// How to print events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// Prints one event: `fields` (a JSON object) plus `"event": name` in JSON mode,
    /// `human` otherwise.
    pub(crate) fn event(&self, name: &str, mut fields: Value, human: impl FnOnce() -> String) {
        let mut stdout = std::io::stdout().lock();
        let line = if self.json {
            if let Value::Object(map) = &mut fields {
                map.insert("event".into(), json!(name));
            }
            fields.to_string()
        } else {
            human()
        };
        // A closed stdout (reader gone) must not crash the meeting.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// Prints an `error` event.
    pub(crate) fn error(&self, kind: &str, message: &str) {
        self.event("error", json!({ "kind": kind, "message": message }), || {
            format!("error: {message}")
        });
    }
}
