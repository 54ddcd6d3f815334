//! Introspection reads — the `flame` CLI, the dashboard and the JSON API: one task, its log, a
//! session, the session list, a page of a session's tasks.
//!
//! Each read takes two steps, and neither is a database read on the actor or on the storage
//! writer: (1) the actor answers, from memory, what only it knows (which tasks run, where,
//! since when; an open session's live counts) — a few map lookups — and (2) the rows are read
//! on one of a few read-only SQLite connections ([`ReadPool`]) on a blocking thread. A slow
//! read (a page deep into a session of a million tasks) therefore costs a reader thread,
//! never a commit, a hello or a scheduling decision; reads beyond the pool's bound are
//! refused at once with `Busy` rather than queued without end.
//!
//! Guarantee (read-your-writes): the actor answers step (1) only once every write it queued
//! before the read reached it is committed, and step (2) starts after that. So a read sees
//! every change the daemon made before it received the read — a client's own submission,
//! completion, cancellation or close that was acknowledged before it asked, in particular —
//! and possibly later ones (a task may read as finished while step (1) still had it running:
//! the stored final state wins).

mod pool;

use std::collections::HashSet;
use std::sync::Arc;

use flame_core::ids::{SessionId, TaskId, TaskKey};
use flame_core::model::{key, TaskCounts, TaskState};
use flame_core::proto;
use flame_core::storage::{StateLocation, StateReader};
use flame_core::view::TaskView;
use flame_core::{FlameError, Result};

pub use pool::{ReadPool, MAX_ADMITTED, MAX_WAIT};

use crate::session_manager::{closed_info, Event, LiveView, ManagerHandle};

/// Most sessions one listing answers, newest first.
const SESSIONS_LISTED: usize = 10_000;

/// A page request for one session's tasks.
pub struct TaskQuery {
    pub session: SessionId,
    pub state: Option<TaskState>,
    pub limit: u32,
    pub offset: u64,
}

/// What the dashboard's session page shows: the session, a page of its tasks, its latest
/// failures.
pub struct SessionPage {
    pub session: proto::SessionInfo,
    pub tasks: proto::TaskList,
    pub failures: Vec<proto::TaskInfo>,
}

/// The introspection reads; cheap to clone.
#[derive(Clone)]
pub struct Reads {
    manager: ManagerHandle,
    pool: Arc<ReadPool>,
}

impl Reads {
    /// Readers on the state file at `db` (already created by the writer) beside `manager`.
    /// Two to four connections: enough to overlap reads, few enough to leave the machine's
    /// cores to the control plane.
    ///
    /// # Errors
    /// `FlameError::Storage` naming the file when it cannot be opened for reading.
    pub fn open(manager: ManagerHandle, db: &StateLocation) -> Result<Self> {
        let readers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
        Ok(Self {
            manager,
            pool: Arc::new(ReadPool::open(db, readers)?),
        })
    }

    pub fn manager(&self) -> &ManagerHandle {
        &self.manager
    }

    /// Step (1): what memory knows, once the writes queued before this call are committed.
    /// Bounded by [`MAX_WAIT`]: while storage cannot commit, a read is refused, not held.
    async fn live(&self, session: Option<SessionId>) -> Result<LiveView> {
        let call = self
            .manager
            .call(|reply| Event::LiveView { session, reply });
        tokio::time::timeout(MAX_WAIT, call).await.map_err(|_| {
            FlameError::Busy(format!(
                "storage has not caught up within {MAX_WAIT:?}; retry shortly"
            ))
        })?
    }

    /// A session, open (live counts) or closed (counted in storage).
    ///
    /// # Errors
    /// `SessionNotFound` for an id never handed out; `Busy` when too many reads are in flight.
    pub async fn session(&self, id: SessionId) -> Result<proto::SessionInfo> {
        let _admitted = self.pool.admit()?;
        let live = self.live(Some(id)).await?;
        if let Some(info) = live.open.into_iter().next().or(live.closed) {
            return Ok(info);
        }
        self.pool.run(move |r| Ok(closed_info_of(r, id)?.0)).await
    }

    /// The most recent sessions (at most 10,000), newest first.
    ///
    /// # Errors
    /// `Busy` when too many reads are in flight; `Storage` when the read fails.
    pub async fn sessions(&self) -> Result<Vec<proto::SessionInfo>> {
        let _admitted = self.pool.admit()?;
        let live = self.live(None).await?;
        self.pool
            .run(move |r| {
                let open: HashSet<SessionId> = live.open.iter().map(|s| SessionId(s.id)).collect();
                let stored = r.sessions(SESSIONS_LISTED, &open)?;
                Ok(stored
                    .iter()
                    .map(|(rec, counts)| {
                        live.open
                            .iter()
                            .find(|s| s.id == rec.id.0)
                            .cloned()
                            .unwrap_or_else(|| closed_info(rec, *counts))
                    })
                    .collect())
            })
            .await
    }

    /// One task and what it printed (`""` while it runs or if it printed nothing).
    ///
    /// # Errors
    /// `NotFound` when the session has no such task; `Busy` as for every read.
    pub async fn task(&self, k: TaskKey) -> Result<(proto::TaskInfo, String)> {
        let _admitted = self.pool.admit()?;
        let live = self.live(Some(k.session)).await?;
        self.pool
            .run(move |r| {
                let view = overlaid(r.task_view(k)?.ok_or_else(|| not_found(k))?, &live);
                let log = r.task_log(k)?.unwrap_or_default();
                Ok((view.into(), log))
            })
            .await
    }

    /// What a task printed.
    ///
    /// # Errors
    /// `NotFound` when the session has no such task; `Busy` as for every read.
    pub async fn task_log(&self, k: TaskKey) -> Result<String> {
        let _admitted = self.pool.admit()?;
        // Nothing of memory is needed, only the barrier: the log of a task that just finished.
        self.live(Some(k.session)).await?;
        self.pool
            .run(move |r| r.task_log(k)?.ok_or_else(|| not_found(k)))
            .await
    }

    /// A page of a session's tasks and how many match in all.
    ///
    /// # Errors
    /// `SessionNotFound` for an unknown session; `Busy` as for every read.
    pub async fn tasks(&self, q: TaskQuery) -> Result<proto::TaskList> {
        let _admitted = self.pool.admit()?;
        let live = self.live(Some(q.session)).await?;
        self.pool
            .run(move |r| {
                let counts = match known_counts(&live) {
                    Some(c) => c,
                    None => closed_info_of(r, q.session)?.1,
                };
                task_page(r, &q, &live, counts)
            })
            .await
    }

    /// The session, the page `q` of its tasks and its first `failures` failed tasks, read in
    /// one go (one barrier, one reader).
    ///
    /// # Errors
    /// As [`Reads::tasks`].
    pub async fn session_page(&self, q: TaskQuery, failures: u32) -> Result<SessionPage> {
        let _admitted = self.pool.admit()?;
        let live = self.live(Some(q.session)).await?;
        self.pool
            .run(move |r| {
                let known = live.open.first().or(live.closed.as_ref());
                let (session, counts) = match (known, known_counts(&live)) {
                    (Some(info), Some(c)) => (info.clone(), c),
                    _ => closed_info_of(r, q.session)?,
                };
                let tasks = task_page(r, &q, &live, counts)?;
                let failed = TaskQuery {
                    session: q.session,
                    state: Some(TaskState::Failed),
                    limit: failures,
                    offset: 0,
                };
                let failures = task_page(r, &failed, &live, counts)?.tasks;
                Ok(SessionPage {
                    session,
                    tasks,
                    failures,
                })
            })
            .await
    }
}

fn not_found(k: TaskKey) -> FlameError {
    FlameError::NotFound(format!("session {} has no task {}", k.session, k.task.0))
}

/// A session's counts when memory knows them: it is open, or it closed recently (then they
/// are final, and counting them in storage would cost a walk of the session's tasks).
fn known_counts(live: &LiveView) -> Option<TaskCounts> {
    live.counts.or_else(|| {
        live.closed.as_ref().map(|s| TaskCounts {
            pending: s.pending,
            running: s.running,
            succeeded: s.succeeded,
            failed: s.failed,
            cancelled: s.cancelled,
        })
    })
}

/// A session that memory does not hold (closed) as storage has it.
fn closed_info_of(
    r: &mut dyn StateReader,
    id: SessionId,
) -> Result<(proto::SessionInfo, TaskCounts)> {
    let (rec, counts) = r.session(id)?.ok_or(FlameError::SessionNotFound(id))?;
    Ok((closed_info(&rec, counts), counts))
}

fn overlaid(mut v: TaskView, live: &LiveView) -> TaskView {
    if let Some(l) = live.running.get(&v.key.task) {
        v.overlay(l);
    }
    v
}

/// One page of `q`. Storage cannot tell a running task from a pending one (both are stored
/// pending): for an open session the running ones are those memory has sent to executors
/// (a handful), and the pending ones the stored-pending rows without them.
fn task_page(
    r: &mut dyn StateReader,
    q: &TaskQuery,
    live: &LiveView,
    counts: TaskCounts,
) -> Result<proto::TaskList> {
    let total = match q.state {
        None => counts.total(),
        Some(s) => counts.get(s),
    };
    let open = live.counts.is_some();
    let views = match q.state {
        Some(TaskState::Running) if open => {
            let offset = usize::try_from(q.offset).unwrap_or(usize::MAX);
            let mut views = Vec::new();
            for t in live.dispatched.iter().skip(offset).take(q.limit as usize) {
                // Every dispatched task is stored: its insert was committed before step (1).
                views.extend(r.task_view(key(q.session, *t))?);
            }
            views
        }
        Some(TaskState::Pending) if open => {
            let running: HashSet<TaskId> = live.dispatched.iter().copied().collect();
            r.pending_views(q.session, &running, q.limit, q.offset)?
        }
        state => r.task_views(q.session, state, q.limit, q.offset)?,
    };
    let tasks = views
        .into_iter()
        .map(|v| overlaid(v, live).into())
        .collect();
    Ok(proto::TaskList { tasks, total })
}
