//! Durable state: the [`Storage`] trait and its engines, SQLite ([`SqliteStorage`], the
//! default) and PostgreSQL ([`PgStorage`], `--state-url`; #13). Objects
//! are not here: they live in the nodes' stores ([`crate::objects`]).
//!
//! The session manager owns one `Storage` on a dedicated writer thread. Every change is a
//! [`WriteOp`]; the writer drains whatever ops are queued and applies them in **one**
//! transaction (group commit), so the cost of durability is paid per batch, not per task.
//! On start, [`Storage::load`] returns a [`Snapshot`] from which the session manager rebuilds
//! its in-memory state: open sessions stay open, pending tasks stay pending, and tasks that
//! were running go back to pending (their attempt counts are kept).

#[cfg(test)]
mod conformance;
mod pg;
mod sqlite;

/// A throw-away PostgreSQL server for tests (here and in the daemon's tests).
#[doc(hidden)]
pub mod pg_test_server;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub use pg::{parse_url as parse_state_url, Epoch, LeaderInfo, PgLeadership, PgReader, PgStorage};
pub use sqlite::{SqliteReader, SqliteStorage};

use crate::error::Result;
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId, TaskKey};
use crate::model::{
    ApplicationRecord, SessionRecord, TaskCounts, TaskFailure, TaskRecord, TaskState,
};
use crate::view::TaskView;

/// A task as submitted: the id chosen by the client and its input.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    pub id: TaskId,
    pub input: Bytes,
}

/// One change to durable state.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    /// Insert or replace an application.
    PutApplication(ApplicationRecord),
    /// Insert or replace a session (spec and state).
    PutSession(SessionRecord),
    /// Mark a session closed.
    CloseSession { id: SessionId, closed_ms: i64 },
    /// Insert tasks as pending. A task id the session already has is ignored (idempotent
    /// resubmission after a reconnect).
    InsertTasks {
        session: SessionId,
        tasks: Vec<NewTask>,
        created_ms: i64,
    },
    /// Record how many attempts a still-unfinished task has used (written when an attempt is
    /// lost, so a restart does not forget it).
    SetAttempts { key: TaskKey, attempts: u32 },
    /// Record a task's final state and outcome. The input blob may be dropped at this point.
    FinishTask {
        key: TaskKey,
        state: TaskState,
        output: Bytes,
        error: Option<TaskFailure>,
        attempts: u32,
        finished_ms: i64,
        /// When the last attempt was sent to an executor, if it ever was.
        started_ms: Option<i64>,
        /// The executor (and its node) of the last attempt.
        ran_on: Option<(ExecutorId, NodeId)>,
        /// Keep the input although the task is finished: its result is an object on a node,
        /// and losing that node runs the task again (lineage, #12).
        keep_input: bool,
    },
    /// Set a named counter (next session id, next executor id, next client id, ...).
    SetMeta { key: String, value: u64 },
    /// Store what a task printed (replacing an earlier attempt's). Only written for tasks
    /// that printed something, so silent tasks cost no row.
    PutTaskLog { key: TaskKey, log: String },
    /// Forget the sessions closed before `closed_before_ms`: their tasks (results, errors),
    /// their logs and the sessions themselves. The space is reclaimed after the commit.
    PruneClosed { closed_before_ms: i64 },
    /// Drop a finished task's kept input (see `FinishTask::keep_input`): its result object
    /// was deleted, so it will never run again. A task not finished keeps its input.
    DropInput { key: TaskKey },
}

/// Everything the session manager needs to resume after a restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub applications: Vec<ApplicationRecord>,
    /// Open sessions only; closed ones are answered from storage on demand.
    pub sessions: Vec<SessionRecord>,
    /// Unfinished tasks of open sessions with their inputs, in submission order, state
    /// already reset to `Pending`.
    pub tasks: Vec<TaskRecord>,
    /// Task counts per open session, finished tasks included.
    pub counts: HashMap<SessionId, TaskCounts>,
    pub meta: HashMap<String, u64>,
    /// The state's identity: made once with the database, told to clients in every hello
    /// so that a client notices when the daemon came back on another state.
    pub identity: String,
}

/// Durable storage of applications, sessions and tasks.
///
/// Implementations are used from one thread at a time; `apply` must be atomic: either every
/// op of the batch is durable, or none is.
pub trait Storage: Send {
    /// Where the state lives, for error messages (the database file); empty if nowhere.
    fn location(&self) -> String {
        String::new()
    }

    /// Read everything needed to resume (see [`Snapshot`]).
    ///
    /// # Errors
    /// `FlameError::Storage` when the database cannot be read.
    fn load(&mut self) -> Result<Snapshot>;

    /// Apply a batch of ops in one transaction.
    ///
    /// # Errors
    /// `FlameError::Storage` when the transaction fails; then nothing of the batch is applied.
    fn apply(&mut self, ops: &[WriteOp]) -> Result<()>;

    /// Apply several batches of ops in one transaction, in order (group commit without
    /// first copying every op into one vector).
    ///
    /// # Errors
    /// As [`Storage::apply`]: on failure nothing of any batch is applied.
    fn apply_all(&mut self, batches: &[Vec<WriteOp>]) -> Result<()> {
        self.apply(&batches.concat())
    }

    /// One task, finished or not; `None` if the session has no such task.
    fn get_task(&mut self, key: TaskKey) -> Result<Option<TaskRecord>>;

    /// What a task printed: `Some("")` if it printed nothing (or has not finished),
    /// `None` if the session has no such task.
    fn get_task_log(&mut self, key: TaskKey) -> Result<Option<String>>;

    /// A session, open or closed, with its task counts.
    fn get_session(&mut self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>>;

    /// All sessions, most recent first, at most `limit`.
    fn list_sessions(&mut self, limit: usize) -> Result<Vec<(SessionRecord, TaskCounts)>>;

    /// One task as introspection shows it (no payloads); `None` if the session has no such
    /// task. A running task reads as pending: only memory knows it runs.
    fn get_task_view(&mut self, key: TaskKey) -> Result<Option<TaskView>>;

    /// A page of a session's tasks in task-id order (a client's submission order), only
    /// those in `state` if given.
    fn list_task_views(
        &mut self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>>;
}

/// The introspection reads (dashboard, CLI, JSON API) the daemon runs on connections of their
/// own beside the writer's, so a slow read never delays a commit. One per engine.
pub trait StateReader: Send {
    /// One task as introspection shows it; `None` if the session has no such task.
    fn task_view(&mut self, key: TaskKey) -> Result<Option<TaskView>>;
    /// What a task printed (`""` if nothing); `None` if the session has no such task.
    fn task_log(&mut self, key: TaskKey) -> Result<Option<String>>;
    /// A session with its task counts as stored.
    fn session(&mut self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>>;
    /// The most recent sessions, at most `limit`; counts of those in `live` are not read.
    fn sessions(
        &mut self,
        limit: usize,
        live: &HashSet<SessionId>,
    ) -> Result<Vec<(SessionRecord, TaskCounts)>>;
    /// A page of a session's tasks in task-id order, only those in `state` if given.
    fn task_views(
        &mut self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>>;
    /// A page of a session's stored-pending tasks, leaving out those in `skip`.
    fn pending_views(
        &mut self,
        session: SessionId,
        skip: &HashSet<TaskId>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>>;
}

/// Where the durable state lives: a SQLite file (the default) or a PostgreSQL database.
#[derive(Clone, Debug, PartialEq)]
pub enum StateLocation {
    File(PathBuf),
    /// A `postgres://` URL (password included: never log it, use [`PgStorage::location`]).
    Postgres(String),
}

impl StateLocation {
    /// Open the writer's storage. Safe to call from async code: the PostgreSQL client,
    /// which runs a runtime of its own, is opened on a plain thread.
    ///
    /// # Errors
    /// As [`SqliteStorage::open`] / [`PgStorage::open`].
    pub fn open(&self) -> Result<Box<dyn Storage>> {
        match self {
            Self::File(path) => Ok(Box::new(SqliteStorage::open(path)?)),
            Self::Postgres(url) => {
                let url = url.clone();
                let pg = off_runtime(move || PgStorage::open(&url))?;
                Ok(Box::new(pg))
            }
        }
    }

    /// Open one introspection reader (call from a blocking thread, not a tokio worker).
    ///
    /// # Errors
    /// As [`SqliteReader::open`] / [`PgReader::open`].
    pub fn reader(&self) -> Result<Box<dyn StateReader>> {
        match self {
            Self::File(path) => Ok(Box::new(SqliteReader::open(path)?)),
            Self::Postgres(url) => {
                let url = url.clone();
                Ok(Box::new(off_runtime(move || PgReader::open(&url))?))
            }
        }
    }

    /// The SQLite file, if the state is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }
}

/// Run `f` on a plain thread (no tokio context), for the sync PostgreSQL client.
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    std::thread::spawn(f)
        .join()
        .map_err(|_| crate::error::FlameError::Internal("opening the state panicked".into()))?
}
