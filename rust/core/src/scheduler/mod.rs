//! The scheduler: a pure, event-driven state machine over nodes, executors, sessions and
//! unfinished tasks. It performs no I/O and reads no clock: every event carries `now`, and
//! every decision comes out as an [`Action`] for the session manager to carry out (send a
//! command, write storage, notify a client). That keeps it deterministic and unit-testable
//! with virtual time.
//!
//! Policy (this version): executors are bound to one session at a time; a session gets up to
//! its `slots` executors and never more than it has unfinished tasks; free executors are
//! handed out round-robin by priority, then fewest-held first; an executor left idle stays
//! bound ("warm") for `warm_delay` unless another session is waiting for one, and a session
//! below its fair share (capacity / sessions with work) reclaims executors from sessions above
//! it as their current tasks finish — nothing is killed for fairness.
//!
//! Cost: events touch only the entities they name; [`Scheduler::schedule`] walks the sessions
//! that have pending work and, for each executor it hands out, the idle set and the nodes.

mod events;
mod placement;
mod state;
mod submission;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            window: 4,
            warm_delay: Duration::from_secs(2),
            first_executor_id: 1,
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
    /// Registered executors bound to no session.
    idle: BTreeSet<ExecutorId>,
    /// Open sessions.
    sessions: HashMap<SessionId, Session>,
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
            sessions: HashMap::new(),
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

    /// When the next warm executor expires or the next running task times out, if ever:
    /// the session manager wakes up then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let warm = self
            .executors
            .values()
            .filter_map(|e| e.idle_since)
            .min()
            .map(|t| t + self.config.warm_delay);
        let timeout = self
            .executors
            .values()
            .filter_map(|e| self.task_deadline(e))
            .min();
        warm.into_iter().chain(timeout).min()
    }

    /// When the task at the head of this executor's window runs out of time, if it has a limit.
    fn task_deadline(&self, e: &Executor) -> Option<Instant> {
        let since = e.head_since?;
        let session = self.sessions.get(&e.session()?)?;
        let limit = session.spec.timeout_secs;
        // A limit too large to represent is no limit (never a panic on a client's number).
        let limit = Duration::try_from_secs_f64(limit)
            .ok()
            .filter(|d| !d.is_zero())?;
        since.checked_add(limit)
    }

    /// Fail running tasks that are past their session's timeout and kill their executors
    /// (user code cannot be interrupted safely); the node reports the exit and the executor
    /// is replaced.
    fn expire_timeouts(&mut self, now: Instant) {
        let expired: Vec<(ExecutorId, TaskId, SessionId)> = self
            .executors
            .values()
            .filter(|e| self.task_deadline(e).is_some_and(|d| d <= now))
            .filter_map(|e| Some((e.id, *e.inflight.front()?, e.session()?)))
            .collect();
        for (eid, tid, sid) in expired {
            let limit = self.sessions[&sid].spec.timeout_secs;
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
        exec.head_since = None;
        exec.releasing = true;
        let node = exec.node;
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

    /// Hand out work: feed bound executors, acquire executors for sessions that want more,
    /// release warm executors whose delay ran out.
    pub fn schedule(&mut self, now: Instant) {
        if self.draining {
            self.expire_timeouts(now);
            return;
        }
        let mut demanding: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| !s.pending.is_empty())
            .map(|s| s.id)
            .collect();
        for &sid in &demanding {
            self.feed(sid, now);
        }
        demanding.retain(|sid| {
            self.sessions
                .get(sid)
                .is_some_and(|s| !s.pending.is_empty() && s.held() < s.wanted())
        });
        self.acquire_for(demanding, now);
        self.release_expired(now);
        self.expire_timeouts(now);
    }

    /// Send pending tasks of `sid` to its executors with room in their window, one task per
    /// executor per round so a short queue spreads across executors.
    fn feed(&mut self, sid: SessionId, now: Instant) {
        let window = self.config.window;
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mut ready: Vec<ExecutorId> = session
            .executors
            .iter()
            .copied()
            .filter(|e| {
                self.executors
                    .get(e)
                    .is_some_and(|x| !x.releasing && x.inflight.len() < window)
            })
            .collect();
        ready.sort_unstable();
        let mut batches: HashMap<ExecutorId, Vec<(TaskId, Bytes, u32)>> = HashMap::new();
        while !ready.is_empty() && !session.pending.is_empty() {
            ready.retain(|eid| {
                let Some(exec) = self.executors.get_mut(eid) else {
                    return false;
                };
                let Some(tid) = pop_pending(session) else {
                    return false;
                };
                let Some(slot) = session.tasks.get_mut(&tid) else {
                    return true;
                };
                slot.attempts += 1;
                slot.executor = Some(*eid);
                slot.started = Some(now);
                slot.ran_on = Some((*eid, exec.node));
                if exec.inflight.is_empty() {
                    exec.head_since = Some(now);
                }
                exec.inflight.push_back(tid);
                exec.idle_since = None;
                session.counts.remove(TaskState::Pending, 1);
                session.counts.add(TaskState::Running, 1);
                batches
                    .entry(*eid)
                    .or_default()
                    .push((tid, slot.input.clone(), slot.attempts));
                exec.inflight.len() < window
            });
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_unstable_by_key(|(e, _)| *e);
        for (executor, tasks) in batches {
            self.actions.push(Action::Dispatch {
                executor,
                session: sid,
                tasks,
            });
        }
    }

    /// Unbind executors that sat idle and bound for longer than the warm delay.
    fn release_expired(&mut self, now: Instant) {
        let delay = self.config.warm_delay;
        let expired: Vec<ExecutorId> = self
            .executors
            .values()
            .filter(|e| e.idle_since.is_some_and(|t| t + delay <= now))
            .map(|e| e.id)
            .collect();
        for eid in expired {
            self.unbind(eid, None);
        }
    }

    /// Send `Unbind` to an executor bound to a session; `reserve_for` is the session that
    /// gets it once it has left.
    fn unbind(&mut self, eid: ExecutorId, reserve_for: Option<SessionId>) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        let Some(sid) = exec.session() else {
            return;
        };
        exec.state = ExecutorState::Unbinding(sid);
        exec.idle_since = None;
        exec.releasing = false;
        exec.reserved_for = reserve_for;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.executors.remove(&eid);
        }
        if let Some(r) = reserve_for.and_then(|r| self.sessions.get_mut(&r)) {
            r.starting += 1;
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
