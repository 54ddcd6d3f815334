//! Where a node's objects live: a memory dir and a spill dir, both private (0700) and
//! unique to one node process, removed when the node stops; and the sweep, at start, of
//! dirs left by node processes that died without removing theirs.
//!
//! The memory dir is `/dev/shm/flame-<uid>/node-<pid>-<random>/` when /dev/shm is a
//! writable tmpfs (objects then cost RAM, not disk I/O), else
//! `<work dir>/objects-mem/node-<pid>-<random>/`. The spill dir is always on disk:
//! `<work dir>/objects-spill/node-<pid>-<random>/`. The pid in the name is what the sweep
//! checks: a dir whose process is gone belongs to nobody.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{FlameError, Result};
use crate::private_files::{euid, private_dir};

/// The default root of the memory dirs.
pub const SHM_ROOT: &str = "/dev/shm";
/// File in the memory dir naming the spill dir (for processes that map spilled objects).
pub const SPILL_DIR_FILE: &str = "spill_dir";
/// The node's Unix socket, in the memory dir (the dir's 0700 is its access control).
pub const SOCKET_FILE: &str = "node.sock";
const TMPFS_MAGIC: u64 = 0x0102_1994;
const PREFIX: &str = "node-";

/// The two dirs of one store.
#[derive(Debug)]
pub struct StoreDirs {
    pub memory: PathBuf,
    pub spill: PathBuf,
}

impl StoreDirs {
    /// Makes both dirs, after sweeping dead nodes' dirs from their parents. `shm_root`:
    /// where a tmpfs is expected (`None`: always the work dir).
    ///
    /// # Errors
    /// `Storage` / `FailedPrecondition` naming the dir that cannot be made private.
    pub fn create(work_dir: &Path, shm_root: Option<&Path>) -> Result<Self> {
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let shm_parent = shm_root
            .filter(|root| is_tmpfs(root))
            .map(|root| root.join(format!("flame-{}", euid())));
        let memory = match shm_parent.map(|p| make_in(&p, &name)) {
            Some(Ok(dir)) => dir,
            Some(Err(e)) => {
                tracing::warn!("no object store in shared memory ({e}); using the work dir");
                make_in(&work_dir.join("objects-mem"), &name)?
            }
            None => make_in(&work_dir.join("objects-mem"), &name)?,
        };
        let spill = match make_in(&work_dir.join("objects-spill"), &name) {
            Ok(dir) => dir,
            Err(e) => {
                let _ = fs::remove_dir_all(&memory);
                return Err(e);
            }
        };
        let dirs = StoreDirs { memory, spill };
        let note = dirs.memory.join(SPILL_DIR_FILE);
        crate::private_files::write_private(&note, dirs.spill.to_string_lossy().as_bytes())
            .inspect_err(|_| dirs.remove())?;
        Ok(dirs)
    }

    /// Removes both dirs and whatever is in them, and their parents when left empty.
    pub fn remove(&self) {
        for dir in [&self.memory, &self.spill] {
            if let Err(e) = fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), "cannot remove the object store: {e}");
                }
            }
            // Only when empty: other nodes may have theirs beside it.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

/// `parent/name`, made private, after sweeping `parent` of dead nodes' dirs. The parent is
/// made again if another node removed it (empty) meanwhile.
fn make_in(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(name);
    for _ in 0..3 {
        private_dir(parent)?;
        sweep(parent);
        match fs::DirBuilder::new().create(&dir) {
            Ok(()) => {
                private_dir(&dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(FlameError::Storage(format!(
                    "cannot create the object store dir {}: {e}",
                    dir.display()
                )))
            }
        }
    }
    Err(FlameError::Storage(format!(
        "cannot create the object store dir {}: its parent keeps disappearing",
        dir.display()
    )))
}

/// Removes `parent/node-<pid>-*` dirs whose process is gone.
pub fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !alive(pid) {
            tracing::info!(dir = %entry.path().display(), pid, "removing a dead node's objects");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether process `pid` exists (EPERM: it does, another user's).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; no signal is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether `path` is on a tmpfs (RAM-backed).
fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid C string and `st` a plain struct statfs fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as u64;
    r == 0 && kind == TMPFS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_are_private_unique_and_removed_with_their_empty_parents() {
        let work = tempfile::tempdir().unwrap();
        let a = StoreDirs::create(work.path(), None).unwrap();
        let b = StoreDirs::create(work.path(), None).unwrap();
        assert_ne!(a.memory, b.memory);
        assert!(a.memory.starts_with(work.path().join("objects-mem")));
        assert!(a.spill.starts_with(work.path().join("objects-spill")));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&a.memory).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let note = fs::read_to_string(a.memory.join(SPILL_DIR_FILE)).unwrap();
        assert_eq!(Path::new(&note), a.spill);
        a.remove();
        assert!(!a.memory.exists() && !a.spill.exists());
        assert!(b.memory.exists(), "the other store is untouched");
        b.remove();
        let left: Vec<_> = fs::read_dir(work.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_dead_nodes_dirs_are_swept_and_a_live_ones_kept() {
        let work = tempfile::tempdir().unwrap();
        let parent = work.path().join("objects-mem");
        // Pid 0x7fff_fff0 is above any pid_max Linux allows.
        let dead = parent.join("node-2147483632-deadbeef");
        let live = parent.join(format!("node-{}-cafebabe", std::process::id()));
        let other = parent.join("not-a-node");
        for d in [&dead, &live, &other] {
            fs::create_dir_all(d.join("x")).unwrap();
        }
        let dirs = StoreDirs::create(work.path(), None).unwrap();
        assert!(!dead.exists() && live.exists() && other.exists());
        dirs.remove();
    }

    #[test]
    fn shared_memory_is_used_when_it_is_a_tmpfs() {
        let work = tempfile::tempdir().unwrap();
        let shm = Path::new(SHM_ROOT);
        let dirs = StoreDirs::create(work.path(), Some(shm)).unwrap();
        if is_tmpfs(shm) {
            assert!(dirs
                .memory
                .starts_with(shm.join(format!("flame-{}", euid()))));
        } else {
            assert!(dirs.memory.starts_with(work.path()));
        }
        dirs.remove();
        assert!(!dirs.memory.exists() && !dirs.spill.exists());
    }
}
