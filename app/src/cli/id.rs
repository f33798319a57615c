//! `conclave id`: print this installation's peer id and safety number.

use std::path::Path;

use conclave_core::{KeySource, Store};
use serde_json::json;

use super::output::Output;

/// Opens the store (creating the identity on first run) and prints it.
pub(crate) fn run(
    data_dir: &Path,
    source: &KeySource,
    out: Output,
) -> Result<(), conclave_core::Error> {
    let store = Store::open(data_dir, source)?;
    let identity = store.load_or_create_identity()?;
    let peer_id = identity.peer_id().to_string();
    let safety = identity.safety_number().to_string();
    out.event(
        "identity",
        json!({ "peer_id": peer_id, "safety_number": safety }),
        || format!("peer id:       {peer_id}\nsafety number: {safety}"),
    );
    Ok(())
}
