//! Files only drover's own user may read: the data directory (mode 0700) and
//! the files in it that hold secrets, such as the SQLite database with its
//! password hashes (0600). Modes are set explicitly instead of being left to
//! the umask, which is usually 022 and would let every local user read them.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory drover creates for its state.
pub const DIR_MODE: u32 = 0o700;

/// The mode of the files drover creates for its state.
pub const FILE_MODE: u32 = 0o600;

/// The permission bits of the file's group and of everyone else.
const GROUP_AND_OTHERS: u32 = 0o077;

/// Creates `dir` and any missing parent with mode 0700, whatever the umask.
///
/// An existing directory keeps its mode: it may be shared (`/tmp`, a home
/// directory) or managed by someone else (systemd sets `StateDirectory=`'s
/// mode), so it is not drover's to change. The secrets in it are protected
/// by their own modes.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        // The umask may have taken bits away (even the owner's); set the
        // mode exactly.
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)),
        // Another process of this server (a sibling worker) got there first.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates `path` as an empty file with mode 0600, whatever the umask, unless
/// it exists. Creating it before anything writes to it means it is never
/// readable by others, not even for a moment: a process that opened it
/// during such a moment would keep reading it after a later `chmod`.
pub fn create_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path) {
        // fchmod on the file just created, so no rename can redirect it.
        Ok(file) => file.set_permissions(Permissions::from_mode(FILE_MODE)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Takes the group's and others' permissions away from an existing file
/// (0644 becomes 0600). Returns the mode it had when it changed it, `None`
/// when there was nothing to do (no such file, or already private).
pub fn narrow(path: &Path) -> io::Result<Option<u32>> {
    let mode = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    if mode & GROUP_AND_OTHERS == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode & !GROUP_AND_OTHERS))?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A scratch directory of this test's own, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(label: &str) -> Self {
            let path = std::env::temp_dir().join(format!("drover-private-{}-{label}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_are_created_private_with_their_parents_and_existing_ones_are_kept() {
        let scratch = Scratch::new("dirs");
        let dir = scratch.0.join("a/b/data");
        create_dir(&dir).unwrap();
        for created in [scratch.0.join("a"), scratch.0.join("a/b"), dir.clone()] {
            assert_eq!(mode(&created), DIR_MODE, "{}", created.display());
        }
        // Twice is fine, and an existing directory keeps its mode.
        create_dir(&dir).unwrap();
        std::fs::set_permissions(&scratch.0, Permissions::from_mode(0o755)).unwrap();
        create_dir(&scratch.0).unwrap();
        assert_eq!(mode(&scratch.0), 0o755);
    }

    #[test]
    fn files_are_created_private_and_loose_ones_are_narrowed() {
        let scratch = Scratch::new("files");
        let file = scratch.0.join("drover.db");
        create_file(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(narrow(&file).unwrap(), None);
        // An existing file is neither truncated nor re-created.
        std::fs::write(&file, b"kept").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        create_file(&file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"kept");
        assert_eq!(narrow(&file).unwrap(), Some(0o644));
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, Permissions::from_mode(0o755)).unwrap();
        assert_eq!(narrow(&file).unwrap(), Some(0o755));
        assert_eq!(mode(&file), 0o700);
        assert_eq!(narrow(&scratch.0.join("missing")).unwrap(), None);
    }
}
