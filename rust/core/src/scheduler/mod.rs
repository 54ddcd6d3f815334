//! The scheduler: a pure, event-driven state machine over nodes, executors, sessions and
//! unfinished tasks. It performs no I/O and reads no clock: every event carries `now`, and
//! every decision comes out as an [`Action`] for the session manager to carry out (send a
//! command, write storage, notify a client). That keeps it deterministic and unit-testable
//! with virtual time.
//!
//! Policy: executors are bound to one session at a time; a session holds at least its
//! `min_executors` (from the moment it opens, even idle), at most its `max_executors`, and no
//! more than it has unfinished tasks otherwise. Which session gets the next executor, and who
//! gives one back, is decided by the [`Policies`] that are on (priority classes, weighted fair
//! share, a per-tenant level, preemption, data-aware placement; see `policy.rs`). An idle
//! executor stays bound ("warm") for the `release_delay` unless another
//! session is waiting for one. Nothing is killed for fairness unless preemption is on. A task
//! that reads objects goes to an executor of its session on a node holding them, if one is
//! free within a bounded wait (`locality.rs`).
//!
//! Layout: `state.rs` (the entities), `index.rs` (ordered indexes), `events.rs` (what
//! happens), `submission.rs` (sessions and tasks), `dispatch.rs` (sending tasks, warm and
//! timeout bookkeeping), `placement.rs` (hand-out), `reclaim.rs` (taking executors back),
//! `policy.rs` (which policies are on), `drain.rs` (emptying a node that is leaving),
//! `blocking.rs` (executors blocked in nested waits give up their slots), `locality.rs` (the
//! objects tasks read and the nodes they wait for).
//!
//! Cost, with S sessions that want executors, I idle executors, N nodes, E_s the executors
//! of one session: an event touches only what it names and marks those sessions dirty; one
//! [`Scheduler::schedule`] pass re-indexes the dirty sessions (O(log S) each), feeds the
//! ones with new pending tasks (O(E_s + tasks sent) each; a result feeds only the executor
//! that sent it, O(window)), then makes placements. One placement is O(log S + log I + log N): the next
//! session is the first entry of an ordered set, an idle executor comes from per-session,
//! per-service and per-interpreter sets, a node from a set ordered by free slots, a warm
//! executor from a set ordered by idle time. A reclaim adds the choice of which executor of
//! the victim to take back, O(E_victim). Expiring warm executors and timeouts pops ordered
//! sets, O(log E) per expiry; [`Scheduler::next_deadline`] is O(log E). A task that reads
//! objects adds O(reads × holders) when queued and O(1) amortized when sent; an executor
//! passed over adds O(log E) (see `locality.rs`); a task that reads none costs nothing more.

mod blocking;
mod dispatch;
mod drain;
mod events;
mod eviction;
mod index;
mod locality;
mod placement;
mod policy;
mod reclaim;
mod state;
mod submission;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_blocking;
#[cfg(test)]
mod tests_data;
#[cfg(test)]
mod tests_dispatch;
#[cfg(test)]
mod tests_drain;
#[cfg(test)]
mod tests_partition;
#[cfg(test)]
mod tests_policies;
#[cfg(test)]
mod tests_scale;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use locality::{Locality, LocalityMap, NoLocality, ObjectRead, TaskReads};
pub use policy::Policies;
pub use state::{Executor, ExecutorState, Node, Session, TaskSlot};
pub use submission::CancelOutcome;

use crate::ids::{ExecutorId, NodeId, SessionId, TaskId, TaskKey};
use crate::model::{TaskFailure, TaskState};

/// Tunables of the scheduling policy.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Tasks sent ahead to one executor (the one running plus prefetched ones), at least.
    pub window: usize,
    /// At most this many, for sessions of very short tasks (see `window_work`).
    pub window_max: usize,
    /// How much work (by the session's mean task run time) to keep in flight per executor:
    /// short tasks then travel many to a message, while long ones are not hoarded.
    pub window_work: Duration,
    /// How long an idle executor stays bound to its session when nobody else wants it.
    pub release_delay: Duration,
    /// First executor id to hand out (unique across restarts of the session manager).
    pub first_executor_id: u64,
    /// Which policies decide who gets executors.
    pub policies: Policies,
    /// Data-aware: how long an executor with nothing to do waits for a task of its session
    /// that reads data on its node, while others wait for other nodes; then it takes those.
    pub data_wait: Duration,
    /// Data-aware: a task prefers nodes only if they hold at least this many of its bytes
    /// (moving less costs less than waiting for them).
    pub data_min_bytes: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            window: 2,
            window_max: 64,
            window_work: Duration::from_millis(2),
            release_delay: Duration::from_secs(2),
            first_executor_id: 1,
            policies: Policies::default(),
            data_wait: Duration::from_millis(100),
            data_min_bytes: 1 << 20,
        }
    }
}

/// A task that reached a final state; the session manager persists it, then tells `watcher`.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub key: TaskKey,
    pub state: TaskState,
    pub output: Bytes,
    pub error: Option<TaskFailure>,
    pub attempts: u32,
    pub watcher: Option<u64>,
    /// When its last attempt was dispatched, and to which executor on which node.
    pub started: Option<Instant>,
    pub ran_on: Option<(ExecutorId, NodeId)>,
}

/// One decision for the session manager to carry out, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Spawn {
        node: NodeId,
        executor: ExecutorId,
        python: String,
    },
    Kill {
        node: NodeId,
        executor: ExecutorId,
        reason: String,
    },
    Bind {
        executor: ExecutorId,
        session: SessionId,
    },
    /// Send these tasks (id, input, attempt number) to the executor.
    Dispatch {
        executor: ExecutorId,
        session: SessionId,
        tasks: Vec<(TaskId, Bytes, u32)>,
    },
    Unbind {
        executor: ExecutorId,
        session: SessionId,
    },
    Finish(Completion),
    /// Persist the attempt count of a task that goes back to pending.
    RecordAttempts {
        key: TaskKey,
        attempts: u32,
    },
}

/// The scheduler state. See the module docs.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    nodes: HashMap<NodeId, Node>,
    executors: HashMap<ExecutorId, Executor>,
    /// Registered executors bound to no session, and the same by interpreter, by the
    /// session they last served and by that session's service (data-aware placement).
    idle: BTreeSet<ExecutorId>,
    idle_by_python: HashMap<String, BTreeSet<ExecutorId>>,
    idle_by_session: HashMap<SessionId, BTreeSet<ExecutorId>>,
    idle_by_app: HashMap<u64, BTreeSet<ExecutorId>>,
    /// The same by node (data-aware placement: an idle executor where a task's data is).
    idle_by_node: HashMap<NodeId, BTreeSet<ExecutorId>>,
    /// Nodes with free slots, most free first.
    free_nodes: BTreeSet<(std::cmp::Reverse<usize>, NodeId)>,
    /// Free slots over all nodes in `free_nodes` (the sum of their keys), kept in step.
    free_slots_total: usize,
    /// Bound executors with nothing to do, oldest first (`Executor::idle_since`).
    warm: BTreeSet<(Instant, ExecutorId)>,
    /// Executors leaving a session for no other one (`Unbinding`, nothing reserved): idle
    /// soon, so a session does not send ahead the tasks they can take.
    leaving: BTreeSet<ExecutorId>,
    /// Running head tasks by when they time out (`Executor::deadline`).
    deadlines: BTreeSet<(Instant, ExecutorId)>,
    /// Executors with nothing to do while tasks of their session wait for other nodes, by
    /// since when (`Executor::passed_over`; they take those tasks after `data_wait`).
    data_waits: BTreeSet<(Instant, ExecutorId)>,
    /// Open sessions.
    sessions: HashMap<SessionId, Session>,
    index: index::Index,
    /// Sessions changed since the last pass: re-indexed by `schedule`.
    dirty: BTreeSet<SessionId>,
    /// Sessions with new pending tasks since the last pass: fed by `schedule`.
    to_feed: BTreeSet<SessionId>,
    /// Tenant numbers by (user, owner client when the user is empty).
    tenant_ids: HashMap<(String, u32), u32>,
    /// Executors killed by preemption, and the session waiting for their slot.
    preempted: HashMap<ExecutorId, SessionId>,
    next_executor: u64,
    actions: Vec<Action>,
    /// Stopping gracefully: dispatch nothing new, let what runs finish.
    draining: bool,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let next_executor = config.first_executor_id.max(1);
        Self {
            config,
            nodes: HashMap::new(),
            executors: HashMap::new(),
            idle: BTreeSet::new(),
            idle_by_python: HashMap::new(),
            idle_by_session: HashMap::new(),
            idle_by_app: HashMap::new(),
            idle_by_node: HashMap::new(),
            free_nodes: BTreeSet::new(),
            free_slots_total: 0,
            warm: BTreeSet::new(),
            leaving: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            data_waits: BTreeSet::new(),
            sessions: HashMap::new(),
            index: index::Index::default(),
            dirty: BTreeSet::new(),
            to_feed: BTreeSet::new(),
            tenant_ids: HashMap::new(),
            preempted: HashMap::new(),
            next_executor,
            actions: Vec::new(),
            draining: false,
        }
    }

    /// Decisions made since the last call, in the order they must be carried out.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn executor(&self, id: ExecutorId) -> Option<&Executor> {
        self.executors.get(&id)
    }

    /// Every executor the scheduler knows, starting ones included.
    pub fn executors(&self) -> impl Iterator<Item = &Executor> {
        self.executors.values()
    }

    /// Executors on a node that are running at least one task.
    pub fn busy_on(&self, node: NodeId) -> usize {
        self.nodes.get(&node).map_or(0, |n| {
            n.executors
                .iter()
                .filter(|e| {
                    self.executors
                        .get(e)
                        .is_some_and(|x| !x.inflight.is_empty())
                })
                .count()
        })
    }

    /// When the next warm executor expires, the next running task times out or the next
    /// passed-over executor may take tasks waiting for other nodes, if ever: the session
    /// manager wakes up then. O(log E).
    pub fn next_deadline(&self) -> Option<Instant> {
        let warm = self
            .warm
            .first()
            .map(|(t, _)| *t + self.config.release_delay);
        let timeout = self.deadlines.first().map(|(t, _)| *t);
        let data = self.data_waits.first();
        let data = data.and_then(|(t, _)| t.checked_add(self.config.data_wait));
        warm.into_iter().chain(timeout).chain(data).min()
    }

    /// Remember that a session changed: the next pass re-indexes it.
    pub(super) fn touch(&mut self, sid: SessionId) {
        self.dirty.insert(sid);
    }

    /// Remember that a session has new pending tasks: the next pass also feeds it.
    pub(super) fn wake(&mut self, sid: SessionId) {
        self.dirty.insert(sid);
        self.to_feed.insert(sid);
    }

    /// Re-enter every changed session in the index. O(log S) each.
    fn reindex_dirty(&mut self) {
        for sid in std::mem::take(&mut self.dirty) {
            if let Some(s) = self.sessions.get_mut(&sid) {
                self.index.remove(s);
                self.index.insert(s, &self.config.policies);
            }
        }
    }

    /// Stop handing out work (a graceful stop): tasks already dispatched run to completion,
    /// queued ones stay queued (and stored, for the next start).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Tasks dispatched to executors and not finished.
    pub fn running_tasks(&self) -> usize {
        self.executors.values().map(|e| e.inflight.len()).sum()
    }

    /// Hand out work: feed the sessions that changed, give executors to sessions that want
    /// more (in policy order), release warm executors whose delay ran out, fail timed-out
    /// tasks. See the module docs for the cost.
    pub fn schedule(&mut self, now: Instant) {
        if self.draining {
            self.expire_timeouts(now);
            // Nothing is fed, but waits that ended must leave the index (next_deadline).
            self.expire_data_waits(now);
            return;
        }
        self.expire_data_waits(now);
        for sid in std::mem::take(&mut self.to_feed) {
            self.feed(sid, None, now);
        }
        self.reindex_dirty();
        self.acquire(now);
        self.release_expired(now);
        self.expire_timeouts(now);
        self.reindex_dirty();
    }

    fn finish(
        &mut self,
        key: TaskKey,
        state: TaskState,
        output: Bytes,
        error: Option<TaskFailure>,
    ) {
        let Some(session) = self.sessions.get_mut(&key.session) else {
            return;
        };
        let Some(slot) = session.tasks.remove(&key.task) else {
            return;
        };
        let was = if slot.executor.is_some() {
            TaskState::Running
        } else {
            TaskState::Pending
        };
        if slot.waits.is_some() {
            session.stop_waiting();
        }
        session.counts.remove(was, 1);
        session.counts.add(state, 1);
        self.touch(key.session);
        self.actions.push(Action::Finish(Completion {
            key,
            state,
            output,
            error,
            attempts: slot.attempts,
            watcher: slot.watcher,
            started: slot.started,
            ran_on: slot.ran_on,
        }));
    }
}
