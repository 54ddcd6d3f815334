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
//! executor stays bound ("warm") for `warm_delay` — the release delay — unless another
//! session is waiting for one. Nothing is killed for fairness unless preemption is on.
//!
//! Layout: `state.rs` (the entities), `index.rs` (ordered indexes), `events.rs` (what
//! happens), `submission.rs` (sessions and tasks), `placement.rs` (hand-out), `reclaim.rs`
//! (taking executors back), `policy.rs` (which policies are on).
//!
//! Cost, with S sessions that want executors, I idle executors, N nodes, E_s the executors
//! of one session: an event touches only what it names and marks those sessions dirty; one
//! [`Scheduler::schedule`] pass re-indexes the dirty sessions (O(log S) each), feeds them
//! (O(E_s) each), then makes placements. One placement is O(log S + log I + log N): the next
//! session is the first entry of an ordered set, an idle executor comes from per-session,
//! per-service and per-interpreter sets, a node from a set ordered by free slots, a warm
//! executor from a set ordered by idle time. A reclaim adds the choice of which executor of
//! the victim to take back, O(E_victim). Expiring warm executors and timeouts pops ordered
//! sets, O(log E) per expiry; [`Scheduler::next_deadline`] is O(log E).

mod events;
mod index;
mod placement;
mod policy;
mod reclaim;
mod state;
mod submission;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_policies;
#[cfg(test)]
mod tests_scale;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use policy::Policies;
pub use state::{Executor, ExecutorState, Node, Session, TaskSlot};
pub use submission::CancelOutcome;

use crate::ids::{ExecutorId, NodeId, SessionId, TaskId, TaskKey};
use crate::model::{TaskFailure, TaskState};

/// Tunables of the scheduling policy.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Tasks sent ahead to one executor (the one running plus prefetched ones).
    pub window: usize,
    /// How long an idle executor stays bound to its session when nobody else wants it.
    pub warm_delay: Duration,
    /// First executor id to hand out (unique across restarts of the session manager).
    pub first_executor_id: u64,
    /// Which policies decide who gets executors.
    pub policies: Policies,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            window: 4,
            warm_delay: Duration::from_secs(2),
            first_executor_id: 1,
            policies: Policies::default(),
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
    /// Nodes with free slots, most free first.
    free_nodes: BTreeSet<(std::cmp::Reverse<usize>, NodeId)>,
    /// Bound executors with nothing to do, oldest first (`Executor::idle_since`).
    warm: BTreeSet<(Instant, ExecutorId)>,
    /// Running head tasks by when they time out (`Executor::deadline`).
    deadlines: BTreeSet<(Instant, ExecutorId)>,
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
            free_nodes: BTreeSet::new(),
            warm: BTreeSet::new(),
            deadlines: BTreeSet::new(),
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

    /// When the next warm executor expires or the next running task times out, if ever:
    /// the session manager wakes up then. O(log E).
    pub fn next_deadline(&self) -> Option<Instant> {
        let warm = self.warm.first().map(|(t, _)| *t + self.config.warm_delay);
        let timeout = self.deadlines.first().map(|(t, _)| *t);
        warm.into_iter().chain(timeout).min()
    }

    /// Record when an executor's head task started (`None`: nothing running) and keep the
    /// timeout index in step.
    pub(super) fn set_head_since(&mut self, eid: ExecutorId, since: Option<Instant>) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        exec.head_since = since;
        if let Some(d) = exec.deadline.take() {
            self.deadlines.remove(&(d, eid));
        }
        let limit = exec
            .session()
            .and_then(|sid| self.sessions.get(&sid))
            .map_or(0.0, |s| s.spec.timeout_secs);
        // A limit too large to represent is no limit (never a panic on a client's number).
        let limit = Duration::try_from_secs_f64(limit)
            .ok()
            .filter(|d| !d.is_zero());
        if let Some(d) = since.zip(limit).and_then(|(t, l)| t.checked_add(l)) {
            exec.deadline = Some(d);
            self.deadlines.insert((d, eid));
        }
    }

    /// Record when a bound executor ran out of work (`None`: it has work, or is no longer
    /// warm) and keep the warm index in step.
    pub(super) fn set_idle_since(&mut self, eid: ExecutorId, since: Option<Instant>) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        if let Some(t) = exec.idle_since.take() {
            self.warm.remove(&(t, eid));
        }
        if let Some(t) = since {
            exec.idle_since = Some(t);
            self.warm.insert((t, eid));
        }
    }

    /// Mark an executor as being given back (or not) and keep its session's count.
    pub(super) fn set_releasing(&mut self, eid: ExecutorId, releasing: bool) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        if exec.releasing == releasing {
            return;
        }
        exec.releasing = releasing;
        if let Some(s) = exec.session().and_then(|sid| self.sessions.get_mut(&sid)) {
            if releasing {
                s.releasing += 1;
            } else {
                s.releasing = s.releasing.saturating_sub(1);
            }
            let sid = s.id;
            self.touch(sid);
        }
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

    /// Fail running tasks that are past their session's timeout and kill their executors
    /// (user code cannot be interrupted safely); the node reports the exit and the executor
    /// is replaced.
    fn expire_timeouts(&mut self, now: Instant) {
        while let Some(&(d, eid)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.remove(&(d, eid));
            let Some(exec) = self.executors.get_mut(&eid) else {
                continue;
            };
            exec.deadline = None;
            let (Some(&tid), Some(sid)) = (exec.inflight.front(), exec.session()) else {
                continue;
            };
            let limit = self.sessions.get(&sid).map_or(0.0, |s| s.spec.timeout_secs);
            let msg = format!(
                "task {} of {sid} ran longer than its timeout of {limit} s",
                tid.0
            );
            let failure = TaskFailure::new(crate::model::ErrorKind::ErrorTimeout, msg);
            self.finish(
                TaskKey {
                    session: sid,
                    task: tid,
                },
                TaskState::Failed,
                Bytes::new(),
                Some(failure),
            );
            self.kill_running(eid, tid, format!("task {} timed out", tid.0));
        }
    }

    /// Kill the executor running `tid` (whose task was already finished by the caller): user
    /// code cannot be interrupted safely. Nothing queued behind it will start there; the node
    /// reports the exit, the queued tasks run elsewhere, and the executor is replaced.
    pub(super) fn kill_running(&mut self, eid: ExecutorId, tid: TaskId, reason: String) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        exec.inflight.retain(|t| *t != tid);
        let node = exec.node;
        self.set_head_since(eid, None);
        self.set_releasing(eid, true);
        self.actions.push(Action::Kill {
            node,
            executor: eid,
            reason,
        });
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
            return;
        }
        for sid in std::mem::take(&mut self.to_feed) {
            self.feed(sid, None, now);
        }
        self.reindex_dirty();
        self.acquire(now);
        self.release_expired(now);
        self.expire_timeouts(now);
        self.reindex_dirty();
    }

    /// Send pending tasks of `sid` to its executors with room in their window (or only to
    /// `only`), one task per executor per round so a short queue spreads across executors.
    /// O(E_s + tasks sent) for a whole session, O(window) for one executor: a result feeds
    /// just the executor that sent it.
    pub(super) fn feed(&mut self, sid: SessionId, only: Option<ExecutorId>, now: Instant) {
        let window = self.config.window;
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if self.draining || session.pending.is_empty() {
            return;
        }
        let mut ready: Vec<ExecutorId> = match only {
            Some(e) => vec![e],
            None => session.executors.iter().copied().collect(),
        };
        ready.retain(|e| {
            session.executors.contains(e)
                && self
                    .executors
                    .get(e)
                    .is_some_and(|x| !x.releasing && x.inflight.len() < window)
        });
        ready.sort_unstable();
        let mut batches: HashMap<ExecutorId, Vec<(TaskId, Bytes, u32)>> = HashMap::new();
        let mut started = Vec::new();
        'rounds: while !ready.is_empty() {
            let mut next = Vec::with_capacity(ready.len());
            for eid in ready {
                let Some(exec) = self.executors.get_mut(&eid) else {
                    continue;
                };
                let Some(tid) = pop_pending(session) else {
                    break 'rounds;
                };
                let Some(slot) = session.tasks.get_mut(&tid) else {
                    continue;
                };
                slot.attempts += 1;
                slot.executor = Some(eid);
                if exec.inflight.is_empty() {
                    started.push(eid);
                }
                exec.inflight.push_back(tid);
                session.counts.remove(TaskState::Pending, 1);
                session.counts.add(TaskState::Running, 1);
                let task = (tid, slot.input.clone(), slot.attempts);
                batches.entry(eid).or_default().push(task);
                if exec.inflight.len() < window {
                    next.push(eid);
                }
            }
            ready = next;
        }
        for eid in started {
            self.set_head_since(eid, Some(now));
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_unstable_by_key(|(e, _)| *e);
        for (executor, tasks) in batches {
            self.set_idle_since(executor, None);
            self.actions.push(Action::Dispatch {
                executor,
                session: sid,
                tasks,
            });
        }
        self.touch(sid);
    }

    /// Unbind executors that sat idle and bound for longer than the release delay, unless
    /// their session would drop below its minimum. O(log E) per expiry.
    fn release_expired(&mut self, now: Instant) {
        let delay = self.config.warm_delay;
        while let Some(&(t, eid)) = self.warm.first() {
            if t + delay > now {
                break;
            }
            self.set_idle_since(eid, None);
            let above_min = self
                .executors
                .get(&eid)
                .and_then(|e| e.session())
                .and_then(|sid| self.sessions.get(&sid))
                .is_none_or(|s| s.kept() > s.reserved());
            if above_min {
                self.unbind(eid, None);
            }
        }
    }

    /// Send `Unbind` to an executor bound to a session; `reserve_for` is the session that
    /// gets it once it has left.
    pub(super) fn unbind(&mut self, eid: ExecutorId, reserve_for: Option<SessionId>) {
        let Some(sid) = self.executors.get(&eid).and_then(|e| e.session()) else {
            return;
        };
        self.set_idle_since(eid, None);
        self.set_releasing(eid, false);
        self.set_head_since(eid, None);
        let exec = self.executors.get_mut(&eid).expect("checked above");
        exec.state = ExecutorState::Unbinding(sid);
        exec.reserved_for = reserve_for;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.executors.remove(&eid);
        }
        self.touch(sid);
        if let Some(r) = reserve_for.and_then(|r| self.sessions.get_mut(&r)) {
            r.starting += 1;
            let r = r.id;
            self.touch(r);
        }
        self.actions.push(Action::Unbind {
            executor: eid,
            session: sid,
        });
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
        }));
    }
}

/// Next pending task that is still unfinished (cancelled ones are removed lazily).
fn pop_pending(session: &mut Session) -> Option<TaskId> {
    while let Some(tid) = session.pending.pop_front() {
        if session
            .tasks
            .get(&tid)
            .is_some_and(|t| t.executor.is_none())
        {
            return Some(tid);
        }
    }
    None
}
