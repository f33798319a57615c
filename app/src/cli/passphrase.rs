//! The store passphrase typed at the terminal, when no flag names a key source and the OS
//! secret service does not keep the key.
//!
//! It is asked on `/dev/tty`, never on stdin (stdin carries chat lines), without echo:
//! once for a data directory whose store key is wrapped under a passphrase, twice (to
//! confirm) for a new one when no secret service answers. Without a terminal (a service, CI,
//! the system tests) nothing is asked, and the store says which flag to pass. A data
//! directory whose key is kept in a plain key file or in the secret service is left to the
//! store too.

use std::path::Path;

use conclave_core::store::key_source::{KEY_FILE, SEALED_KEY_FILE};
use conclave_core::store::os_vault::{OsVault, VAULT_MARKER};
use conclave_core::{KeySource, MIN_PASSPHRASE_CHARS};
use zeroize::Zeroizing;

/// The terminal, if this process has one.
const TTY: &str = "/dev/tty";

/// The passphrase source typed at the terminal for `data_dir`, or `None` where none can or
/// need be asked. Two different passphrases for a new store are an error (nothing is
/// created).
pub(crate) fn from_terminal(data_dir: &Path) -> Result<Option<KeySource>, String> {
    if data_dir.join(KEY_FILE).exists() || data_dir.join(VAULT_MARKER).exists() || !has_terminal() {
        return Ok(None);
    }
    let shown = data_dir.display();
    if data_dir.join(SEALED_KEY_FILE).exists() {
        let passphrase = ask(&format!("Passphrase of {shown}: "))?;
        return Ok(Some(KeySource::passphrase(passphrase.as_str())));
    }
    if OsVault::reachable().is_some() {
        return Ok(None);
    }
    let first = ask(&format!(
        "New passphrase to protect {shown} (at least {MIN_PASSPHRASE_CHARS} characters): "
    ))?;
    let again = ask("The same passphrase again: ")?;
    if first != again {
        return Err("the two passphrases differ; nothing was created".to_owned());
    }
    Ok(Some(KeySource::passphrase(first.as_str())))
}

fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(TTY)
        .is_ok()
}

/// Asks on the terminal, without echo.
fn ask(prompt: &str) -> Result<Zeroizing<String>, String> {
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|err| format!("cannot read the passphrase from the terminal: {err}"))
}
