//! Files only sluice's own user may read or change: the data dir's log, spool, cursors and
//! compiled-plugin cache hold tenants' lines, and a cached plugin is loaded as native code, so
//! another local user who could write there would run code outside the sandbox.
//!
//! Directories sluice creates are 0700 and files 0600 (the umask can only narrow that). A cached
//! artifact is loaded only when it and its directory belong to this process's user and nobody
//! else may write them ([`check_owned`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// `fs::create_dir_all`, with every directory it creates 0700.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Options that create a file 0600; the caller adds read, write, truncate and the like.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// `File::create`, 0600.
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// `fs::write`, creating the file 0600.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    io::Write::write_all(&mut create(path)?, bytes.as_ref())
}

/// [`write`], then syncs the file: for what a confirmation relies on.
pub fn write_synced(path: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    let mut file = create(path)?;
    io::Write::write_all(&mut file, bytes.as_ref())?;
    file.sync_all()
}

/// Syncs a directory, so the names created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Why `path` may not be trusted: it belongs to another user, or others may write it.
pub fn check_owned(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!("{} is a symbolic link", path.display()));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(format!(
                "{} belongs to uid {}, not to sluice's uid {me}",
                path.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{} may be written by others (mode {:o})",
                path.display(),
                meta.mode() & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn created_files_and_directories_are_private_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nested = dir.path().join("a/b");
        create_dir_all(&nested).expect("mkdir");
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        let file = nested.join("f");
        write(&file, b"x").expect("write");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(check_owned(&file), Ok(()));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = check_owned(&file).expect_err("writable by others");
        assert!(e.contains("written by others"), "{e}");
        let link = nested.join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(check_owned(&link).expect_err("a link").contains("symbolic link"));

        // Another user's file (only root can make one).
        let theirs = nested.join("theirs");
        write(&theirs, b"x").expect("write");
        if std::os::unix::fs::chown(&theirs, Some(65534), None).is_ok() {
            assert!(check_owned(&theirs).expect_err("not ours").contains("belongs to uid 65534"));
        }
    }
}
