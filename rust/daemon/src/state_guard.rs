//! Guards of the state directory: [`StateLock`], the exclusive lock one head holds on its
//! state dir for its whole life, and [`Fatal`], how a storage failure that no retry can mend
//! (the database file deleted, replaced or damaged under the running head) stops it.
//!
//! Two heads on one state dir would both hand out session ids 1, 1, 2, 2 and overwrite each
//! other's rows; `flock` on `<state_dir>/flame.lock` makes the second one exit at start,
//! naming the first one's pid (written into the file). The kernel drops the lock when the
//! holder dies, however it dies, so a stale lock file never blocks a restart.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use flame_core::ids::{SessionId, TaskKey};
use flame_core::model::{SessionRecord, TaskCounts, TaskRecord, TaskState};
use flame_core::storage::{Snapshot, Storage, WriteOp};
use flame_core::view::TaskView;
use flame_core::{FlameError, Result};

/// The lock file's name inside the state dir.
pub const LOCK_FILE: &str = "flame.lock";

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Take the state dir's lock, or fail at once if another process holds it.
    ///
    /// # Errors
    /// `FailedPrecondition` naming the dir and the holder's pid when it is taken;
    /// `InvalidArgument` when the lock file cannot be opened.
    pub fn acquire(state_dir: &Path) -> Result<StateLock> {
        let path = state_dir.join(LOCK_FILE);
        let mut file = flame_core::private_files::private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                FlameError::InvalidArgument(format!("cannot open {}: {e}", path.display()))
            })?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(FlameError::InvalidArgument(format!(
                    "cannot lock {}: {err}",
                    path.display()
                )));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(FlameError::FailedPrecondition(format!(
                "state dir {} is in use by another flame-daemon ({holder}, holding {}); \
                 stop it first, or give this one another --state-dir",
                state_dir.display(),
                path.display()
            )));
        }
        // Ours now: say who holds it, for the next one that tries.
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the pid into the lock file");
        }
        Ok(StateLock { _file: file })
    }
}

/// A fatal condition raised by a part of the head (today only storage); whoever runs the
/// head waits on [`Fatal::raised`] and stops it. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Fatal {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Fatal {
    /// Record the first reason and wake whoever waits.
    pub fn raise(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            if r.is_none() {
                tracing::error!(%reason, "fatal: stopping");
                *r = Some(reason);
            }
        }
        self.token.cancel();
    }

    /// Completes with the reason once something fatal happened.
    pub async fn raised(&self) -> String {
        self.token.cancelled().await;
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "a fatal error".into())
    }

    /// `storage`, raising this whenever it reports its file unusable.
    pub fn watch(&self, storage: Box<dyn Storage>) -> Box<dyn Storage> {
        Box::new(Watched {
            inner: storage,
            fatal: self.clone(),
        })
    }

    fn check<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(FlameError::StateFileUnusable(m)) = &r {
            self.raise(m.clone());
        }
        r
    }
}

/// A storage whose "file unusable" errors also raise [`Fatal`]; everything else passes.
struct Watched {
    inner: Box<dyn Storage>,
    fatal: Fatal,
}

impl Storage for Watched {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn load(&mut self) -> Result<Snapshot> {
        self.fatal.check(self.inner.load())
    }
    fn apply(&mut self, ops: &[WriteOp]) -> Result<()> {
        self.fatal.check(self.inner.apply(ops))
    }
    fn apply_all(&mut self, batches: &[Vec<WriteOp>]) -> Result<()> {
        self.fatal.check(self.inner.apply_all(batches))
    }
    fn get_task(&mut self, key: TaskKey) -> Result<Option<TaskRecord>> {
        self.fatal.check(self.inner.get_task(key))
    }
    fn get_task_log(&mut self, key: TaskKey) -> Result<Option<String>> {
        self.fatal.check(self.inner.get_task_log(key))
    }
    fn get_session(&mut self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>> {
        self.fatal.check(self.inner.get_session(id))
    }
    fn list_sessions(&mut self, limit: usize) -> Result<Vec<(SessionRecord, TaskCounts)>> {
        self.fatal.check(self.inner.list_sessions(limit))
    }
    fn get_task_view(&mut self, key: TaskKey) -> Result<Option<TaskView>> {
        self.fatal.check(self.inner.get_task_view(key))
    }
    fn list_task_views(
        &mut self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        self.fatal
            .check(self.inner.list_task_views(session, state, limit, offset))
    }
}
