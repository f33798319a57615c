//! Writing secrets to disk: a new file that only its owner can read (mode 0600), written
//! and synced in one go. The relay's identity key ([`crate::node`]) and its TURN secret
//! ([`crate::turn`]) are both written this way; it lives apart from both so that neither
//! module imports the other for it.

use std::io::Write;
use std::path::Path;

/// Creates `path` (it must not exist) with mode 0600 and writes `bytes` to it, synced.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
