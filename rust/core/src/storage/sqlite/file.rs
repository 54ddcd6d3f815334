//! [`StateFile`]: the database file under a running daemon, watched so that a file deleted,
//! replaced or damaged stops the daemon with an error that names it and says what to do.
//!
//! SQLite keeps writing to the inode it opened: if someone deletes the state file (or the
//! whole state dir) or moves another file into its place, every later commit would land in a
//! file nobody can ever open again, and the next start would begin from another state. So
//! each commit first compares the path's device and inode with those seen at open — one
//! `stat`, a few microseconds next to the commit's `fsync`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{FlameError, Result};

/// The file a [`super::SqliteStorage`] was opened on, and which inode that was.
#[derive(Debug)]
pub(super) struct StateFile {
    path: PathBuf,
    /// (device, inode) at open.
    id: (u64, u64),
}

impl StateFile {
    /// Remember which file `path` is now.
    ///
    /// # Errors
    /// `Storage` when the file cannot be inspected.
    pub(super) fn new(path: &Path) -> Result<StateFile> {
        let m = std::fs::metadata(path).map_err(|e| {
            FlameError::Storage(format!("cannot inspect state file {}: {e}", path.display()))
        })?;
        Ok(StateFile {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` still names the file that was opened.
    ///
    /// # Errors
    /// `StateFileUnusable` naming the path when it was deleted or another file took its place.
    pub(super) fn check(&self) -> Result<()> {
        let what = match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => return Ok(()),
            Ok(_) => "was replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
            Err(e) => {
                return Err(FlameError::StateFileUnusable(format!(
                    "state database {} cannot be inspected any more ({e}); stopping so that \
                     nothing is written where it would be lost",
                    self.path.display()
                )))
            }
        };
        Err(FlameError::StateFileUnusable(format!(
            "state database {} {what} while flame-daemon was running; stopping so that \
             nothing is written where no restart would find it (the clients of the lost \
             state get ClusterStateLostError)",
            self.path.display()
        )))
    }
}

/// `e` with the file named and the remedy spelled out when it says the file is damaged.
pub(super) fn explain(path: Option<&Path>, e: FlameError) -> FlameError {
    match (path, e) {
        (Some(path), FlameError::StateFileUnusable(m)) if !m.contains(&*path.to_string_lossy()) => {
            let p = path.display();
            FlameError::StateFileUnusable(format!(
                "state database {p} is damaged or not a Flame database ({m}). Move it aside \
                 (e.g. `mv {p} {p}.damaged`) and start again, which begins with an empty \
                 state, or restore it from a backup; flame-daemon never deletes it by itself"
            ))
        }
        (_, e) => e,
    }
}
