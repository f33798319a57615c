//! Permissions of the data directory: 0700 for directories, 0600 for files, checked at start.
//!
//! Like ssh with a private key, a data directory that other local users can read or enter is
//! refused with one sentence ([`StoreError::TooOpen`]) instead of being used or silently
//! changed: the user decides whether the directory was exposed. A directory Conclave creates
//! is made 0700. Inside an accepted directory, files are tightened to 0600 and
//! subdirectories to 0700 (files written by older builds, sled's snapshots).

use std::path::Path;

use super::StoreError;

/// Mode of the data directory and of every directory inside it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` with mode 0700, or checks that an existing one is not open to others.
pub(crate) fn prepare_data_dir(dir: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: dir.to_owned(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(meta) => check_mode(dir, mode_of(&meta))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            create_private_dir(dir).map_err(open_err)?;
        }
        Err(err) => return Err(open_err(err)),
    }
    tighten(dir).map_err(open_err)
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    DIR_MODE
}

fn check_mode(dir: &Path, mode: u32) -> Result<(), StoreError> {
    if mode & 0o077 != 0 {
        return Err(StoreError::TooOpen {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    set_mode(dir, DIR_MODE)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
pub(crate) fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Makes every file under `dir` 0600 and every directory 0700 (bounded depth).
pub(crate) fn tighten(dir: &Path) -> std::io::Result<()> {
    tighten_at(dir, 0)
}

fn tighten_at(dir: &Path, depth: usize) -> std::io::Result<()> {
    const MAX_DEPTH: usize = 4;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            set_mode(&entry.path(), DIR_MODE)?;
            if depth < MAX_DEPTH {
                tighten_at(&entry.path(), depth + 1)?;
            }
        } else if kind.is_file() {
            set_mode(&entry.path(), FILE_MODE)?;
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_private_and_an_open_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare_data_dir(&dir).unwrap();
        assert_eq!(mode_of(&std::fs::metadata(&dir).unwrap()), 0o700);
        std::fs::write(dir.join("f"), b"x").unwrap();
        set_mode(&dir.join("f"), 0o644).unwrap();
        prepare_data_dir(&dir).unwrap();
        assert_eq!(mode_of(&std::fs::metadata(dir.join("f")).unwrap()), 0o600);
        set_mode(&dir, 0o755).unwrap();
        let err = prepare_data_dir(&dir).unwrap_err();
        assert!(
            matches!(err, StoreError::TooOpen { mode: 0o755, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod go-rwx"), "{err}");
    }
}
