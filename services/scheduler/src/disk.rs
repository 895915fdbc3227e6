//! Private files on disk: the data directory and the store readable by
//! their owner only, files created owner-only and synced, renames made
//! durable by syncing their directory, and files overwritten with zeros
//! before they are unlinked (so their bytes are gone at file level; a
//! copy-on-write file system or a snapshot may still hold the old blocks).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Owner-only mode of directories.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Owner-only mode of files.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Makes every file and directory this process creates from now on
/// owner-only (umask 077), sled's files included.
pub fn private_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and its parents) when missing and makes it owner-only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, true)
}

#[cfg(unix)]
fn set_mode(path: &Path, dir: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if dir { DIR_MODE } else { FILE_MODE };
    let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o777;
    if current != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: bool) -> io::Result<()> {
    Ok(())
}

/// Makes a file owner-only (0600).
pub fn restrict_file(path: &Path) -> io::Result<()> {
    set_mode(path, false)
}

/// Makes `dir` and everything below it owner-only (directories 0700, files
/// 0600). Symbolic links are left alone.
pub fn restrict_tree(dir: &Path) -> io::Result<()> {
    set_mode(dir, true)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            restrict_tree(&entry.path())?;
        } else if kind.is_file() {
            set_mode(&entry.path(), false)?;
        }
    }
    Ok(())
}

/// Opens `path` for writing, created owner-only and truncated.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    let f = opts.open(path)?;
    // An existing file keeps its mode through `open`.
    set_mode(path, false)?;
    Ok(f)
}

/// Syncs a directory, so that the entries created, renamed or removed in
/// it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Overwrites a file with zeros, syncs it and unlinks it. The caller syncs
/// the directory. A file with other hard links is zeroed under every name:
/// callers unlink such names instead.
pub fn wipe_file(path: &Path) -> io::Result<()> {
    let len = std::fs::metadata(path)?.len();
    let mut f = OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(path)
}

/// Wipes every file below `dir` ([`wipe_file`]), removes the directory
/// and syncs its parent.
pub fn wipe_dir(dir: &Path) -> io::Result<()> {
    wipe_files_below(dir)?;
    std::fs::remove_dir_all(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

fn wipe_files_below(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            wipe_files_below(&entry.path())?;
        } else if kind.is_file() {
            wipe_file(&entry.path())?;
        }
    }
    Ok(())
}

/// The lock file that keeps a second scheduler off a data directory.
pub const LOCK_FILE: &str = "scheduler.lock";

/// Takes the exclusive lock of `dir` ([`LOCK_FILE`]); it is held as long as
/// the returned file is open. `None` when another process holds it.
pub fn lock_dir(dir: &Path) -> io::Result<Option<File>> {
    let path = dir.join(LOCK_FILE);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    let f = opts.open(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// True when both paths name the same file (hard links of one inode).
pub fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
        Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_restricted_tree_is_owner_only_throughout() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("data");
        std::fs::create_dir_all(top.join("store/blobs")).unwrap();
        std::fs::write(top.join("store/db"), b"x").unwrap();
        std::fs::write(top.join("store/blobs/1"), b"x").unwrap();
        std::fs::set_permissions(top.join("store/db"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        create_private_dir(&top).unwrap();
        restrict_tree(&top.join("store")).unwrap();
        assert_eq!(mode(&top), 0o700);
        assert_eq!(mode(&top.join("store")), 0o700);
        assert_eq!(mode(&top.join("store/blobs")), 0o700);
        assert_eq!(mode(&top.join("store/db")), 0o600);
        assert_eq!(mode(&top.join("store/blobs/1")), 0o600);
    }

    #[test]
    fn a_locked_directory_refuses_a_second_lock_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap().expect("free");
        assert!(lock_dir(dir.path()).unwrap().is_none());
        drop(held);
        assert!(lock_dir(dir.path()).unwrap().is_some());
    }

    #[test]
    fn a_wiped_file_is_zeroed_before_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, b"key material").unwrap();
        // A second name of the same inode shows what the wipe wrote.
        let witness = dir.path().join("witness");
        std::fs::hard_link(&p, &witness).unwrap();
        wipe_file(&p).unwrap();
        assert!(!p.exists());
        assert_eq!(std::fs::read(&witness).unwrap(), vec![0u8; 12]);
    }
}
