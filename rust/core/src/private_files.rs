//! Private files: what Flame writes on disk is readable by its own OS user only, and what it
//! reads back from a shared place (object files) is trusted only when that user wrote it.
//!
//! The head's state dir holds the database, the objects (task inputs, `flame.put` values:
//! the users' data) and credentials. Modes are set when a file or directory is created
//! (`0o700` dirs, `0o600` files; a umask can only narrow them), not fixed afterwards, so
//! there is no window in which another user can open the file. A state dir made by an older
//! build or by hand with a looser mode is tightened at start, with a warning naming it; one
//! owned by another user is refused: it is not ours to tighten, and its owner could swap
//! any file in it.
//!
//! Object files are mapped straight into clients' and executors' memory and unpickled, so a
//! file another user could have written must never be read: [`open_trusted`] opens without
//! following a symbolic link, then checks the open descriptor (no race with a rename):
//! owned by our effective uid, and not writable by group or others.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{FlameError, Result};

/// Mode of every directory Flame creates for its state.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Flame creates for its state.
pub const FILE_MODE: u32 = 0o600;

/// This process's effective uid, the owner every private file must have.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Make `dir` (and its missing parents) with mode 0700, or check an existing one: it must
/// belong to this user, and loses any group/other permission (with a warning naming it).
///
/// # Errors
/// `FailedPrecondition` naming the dir and its owner's uid when another user owns it or it
/// is not a directory; `Storage` when it cannot be created or its mode changed.
pub fn private_dir(dir: &Path) -> Result<()> {
    let created = match fs::metadata(dir) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| storage("cannot create directory", dir, e))?;
            true
        }
        Err(e) => return Err(storage("cannot inspect directory", dir, e)),
    };
    let meta = fs::metadata(dir).map_err(|e| storage("cannot inspect directory", dir, e))?;
    if !meta.is_dir() {
        return Err(FlameError::FailedPrecondition(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let ours = euid();
    if meta.uid() != ours {
        return Err(FlameError::FailedPrecondition(format!(
            "directory {} belongs to uid {}, not to uid {ours} (this process); Flame keeps \
             its state only in a directory of its own user: give another dir, or chown it",
            dir.display(),
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode != DIR_MODE {
        if !created && mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:o}"),
                "directory {} could be read by other users (mode {mode:o}); changing it to 700",
                dir.display()
            );
        }
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| storage("cannot change the mode of", dir, e))?;
    }
    Ok(())
}

/// Open options that create a file with mode 0600 and never follow a symbolic link in the
/// last component; add `read`/`write`/`create`... as needed.
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE).custom_flags(libc::O_NOFOLLOW);
    o
}

/// Create `path` empty with mode 0600 if it does not exist; an existing file loses any
/// group/other permission, with a warning naming it. A symbolic link is followed (this is
/// for files in a dir already checked by [`private_dir`]).
///
/// # Errors
/// `Storage` naming the file when it cannot be created, inspected or its mode changed.
pub fn private_file(path: &Path) -> Result<()> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten_if_exists(path),
        Err(e) => Err(storage("cannot create", path, e)),
    }
}

/// An existing file at `path` loses any group/other permission, with a warning naming it;
/// a missing one is fine.
///
/// # Errors
/// `Storage` naming the file when it cannot be inspected or its mode changed.
pub fn tighten_if_exists(path: &Path) -> Result<()> {
    // Non-blocking: opening a FIFO someone put there must not hang the start.
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => tighten(&file, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(storage("cannot open", path, e)),
    }
}

fn tighten(file: &File, path: &Path) -> Result<()> {
    let meta = file
        .metadata()
        .map_err(|e| storage("cannot inspect", path, e))?;
    let mode = meta.mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "file {} could be read by other users (mode {mode:o}); changing it to 600",
            path.display()
        );
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|e| storage("cannot change the mode of", path, e))?;
    }
    Ok(())
}

/// Write `data` to `path` as a private file, atomically (a temporary file, then a rename):
/// a reader sees the old content or the new, never a part.
///
/// # Errors
/// `Storage` naming the file when it cannot be written.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp); // left by a process that died with this pid
    let written = private_options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()));
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(storage("cannot write", path, e));
    }
    Ok(())
}

/// Open `path` for reading, without following a symbolic link, and only if this user owns
/// it and nobody else can write it (checked on the open descriptor).
///
/// # Errors
/// The `std::io::Error` of the open as is (so callers tell "not found" apart);
/// `Ok(Err(FailedPrecondition))` naming the file, its owner's uid and ours (or its mode)
/// when it is opened but not trusted.
pub fn open_trusted(path: &Path) -> std::io::Result<Result<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Err(FlameError::FailedPrecondition(format!(
                "{} is a symbolic link; refusing to follow it",
                path.display()
            ))))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok(check_trusted(path, meta.uid(), meta.mode()).map(|()| file))
}

/// Whether a file with this owner and mode may be read: ours, not group/world-writable.
///
/// # Errors
/// `FailedPrecondition` naming the file and what is wrong with it.
pub fn check_trusted(path: &Path, owner: u32, mode: u32) -> Result<()> {
    let ours = euid();
    if owner != ours {
        return Err(FlameError::FailedPrecondition(format!(
            "{} belongs to uid {owner}, not to uid {ours} (this process); refusing to read \
             a file another user could have written",
            path.display()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(FlameError::FailedPrecondition(format!(
            "{} can be written by other users (mode {:o}); refusing to read it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

fn storage(what: &str, path: &Path, e: std::io::Error) -> FlameError {
    FlameError::Storage(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn dirs_are_made_private_and_open_ones_tightened() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("a").join("b");
        private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        fs::set_permissions(&new, Permissions::from_mode(0o775)).unwrap();
        private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        let file = root.path().join("f");
        fs::write(&file, b"x").unwrap();
        let e = private_dir(&file).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn files_are_created_private_and_open_ones_tightened() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("db");
        private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        tighten_if_exists(&root.path().join("missing")).unwrap();
        let token = root.path().join("token");
        write_private(&token, b"t1").unwrap();
        write_private(&token, b"t2").unwrap();
        assert_eq!(fs::read(&token).unwrap(), b"t2");
        assert_eq!(mode(&token), 0o600);
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            2,
            "no temporaries left"
        );
    }

    #[test]
    fn only_our_files_that_nobody_else_can_write_are_trusted() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("obj");
        write_private(&path, b"x").unwrap();
        assert!(open_trusted(&path).unwrap().is_ok());
        for open in [0o620, 0o602, 0o666] {
            fs::set_permissions(&path, Permissions::from_mode(open)).unwrap();
            let e = open_trusted(&path).unwrap().unwrap_err().to_string();
            assert!(e.contains(&format!("(mode {open:o})")), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
        let e = check_trusted(&path, euid() + 1, 0o600)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "belongs to uid {}, not to uid {}",
                euid() + 1,
                euid()
            )),
            "{e}"
        );
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = open_trusted(&link).unwrap().unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        let missing = open_trusted(&root.path().join("none")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    /// As root (the test machines): a dir or file that really belongs to `nobody`.
    #[test]
    fn what_another_user_owns_is_refused_naming_the_owner() {
        if euid() != 0 {
            eprintln!("not root: cannot chown to another user; skipped");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("theirs");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let e = private_dir(&dir).unwrap_err().to_string();
        assert!(e.contains(&dir.display().to_string()), "{e}");
        assert!(e.contains("belongs to uid 65534, not to uid 0"), "{e}");
        let file = root.path().join("obj");
        write_private(&file, b"x").unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let e = open_trusted(&file).unwrap().unwrap_err().to_string();
        assert!(e.contains("belongs to uid 65534, not to uid 0"), "{e}");
    }
}
