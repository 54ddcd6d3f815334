//! Read-only questions about tasks and executors (the `flame` CLI, the dashboard), and the
//! unary cancel. Finished tasks are read on the storage thread, never on the actor; the actor
//! only adds what memory alone knows — which tasks run right now, where, since when — and that
//! is found through the session's executors (a handful), not by walking its task table,
//! except for a page of pending tasks, which only memory can tell from running ones.

use std::collections::HashMap;
use std::time::Instant;

use flame_core::ids::{SessionId, TaskId, TaskKey};
use flame_core::model::{key, now_ms, TaskCounts, TaskState};
use flame_core::proto;
use flame_core::scheduler::{CancelOutcome, ExecutorState, Session};
use flame_core::storage::Storage;
use flame_core::view::{LiveTask, TaskView};
use flame_core::FlameError;

use super::actor::Actor;
use super::Reply;

/// A page request for one session's tasks.
pub struct TaskQuery {
    pub session: SessionId,
    pub state: Option<TaskState>,
    pub limit: u32,
    pub offset: u64,
}

impl Actor {
    pub(super) fn get_task(&self, k: TaskKey, reply: Reply<proto::TaskInfo>) {
        let live = self.running_in(k.session);
        self.store.read(move |st| {
            let _ = reply.send(read_view(st, k, &live).map(Into::into));
        });
    }

    pub(super) fn list_tasks(&self, q: TaskQuery, reply: Reply<proto::TaskList>) {
        let live = self.running_in(q.session);
        let open = self.sched.session(q.session);
        let counts = open.map(|s| s.counts);
        if let (Some(s), Some(state @ (TaskState::Pending | TaskState::Running))) = (open, q.state)
        {
            // Storage cannot tell running from pending: take the page's ids from memory.
            let ids = unfinished_page(s, state, &q);
            let total = s.counts.get(state);
            self.store.read(move |st| {
                // Every id is stored: its insert was queued before this read.
                let tasks: flame_core::Result<Vec<_>> = ids
                    .into_iter()
                    .map(|t| read_view(st, key(q.session, t), &live).map(Into::into))
                    .collect();
                let _ = reply.send(tasks.map(|tasks| proto::TaskList { tasks, total }));
            });
            return;
        }
        self.store.read(move |st| {
            let _ = reply.send(stored_page(st, &q, counts, &live));
        });
    }

    pub(super) fn list_executors(&self, reply: Reply<Vec<proto::ExecutorInfo>>) {
        let _ = reply.send(Ok(self.executor_infos()));
    }

    /// Every executor, by id.
    pub(super) fn executor_infos(&self) -> Vec<proto::ExecutorInfo> {
        let mut out: Vec<proto::ExecutorInfo> = self
            .sched
            .executors()
            .map(|e| {
                let (state, session) = match e.state {
                    ExecutorState::Starting => ("starting", None),
                    ExecutorState::Idle => ("idle", None),
                    ExecutorState::Binding(s) => ("binding", Some(s)),
                    ExecutorState::Bound(s) => ("bound", Some(s)),
                    ExecutorState::Unbinding(s) => ("unbinding", Some(s)),
                };
                proto::ExecutorInfo {
                    id: e.id.0,
                    node_id: e.node.0,
                    state: state.into(),
                    session_id: session.map_or(0, |s| s.0),
                    inflight: e.inflight.len() as u32,
                }
            })
            .collect();
        out.sort_unstable_by_key(|e| e.id);
        out
    }

    /// Cancel one task, then answer it as storage has it after the cancellation is written.
    pub(super) fn cancel_task(&mut self, k: TaskKey, reply: Reply<proto::TaskInfo>) {
        if self.sched.cancel(k.session, k.task) == CancelOutcome::NotFound {
            // Not unfinished here: finished already, or never seen.
            self.store.read(move |st| {
                let r = match st.get_task_view(k) {
                    Ok(Some(v)) if v.state.is_final() => {
                        Err(FlameError::FailedPrecondition(format!(
                            "task {} of session {} already finished ({})",
                            k.task.0,
                            k.session,
                            v.state.name()
                        )))
                    }
                    Ok(Some(v)) => Ok(v.into()),
                    Ok(None) => Err(not_found(k)),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            });
            return;
        }
        let actions = self.sched.take_actions();
        self.apply(actions);
        self.get_task(k, reply);
    }

    /// What memory knows of a session's running tasks, with wall-clock start times.
    fn running_in(&self, sid: SessionId) -> HashMap<TaskId, LiveTask> {
        let Some(s) = self.sched.session(sid) else {
            return HashMap::new();
        };
        let (mono, wall) = (Instant::now(), now_ms());
        let mut live = HashMap::new();
        for eid in &s.executors {
            let Some(e) = self.sched.executor(*eid) else {
                continue;
            };
            for (i, tid) in e.inflight.iter().enumerate() {
                let Some(slot) = s.tasks.get(tid) else {
                    continue;
                };
                // The head of the window started when the task before it finished; the
                // others are only dispatched (and say so by their start time).
                let started = if i == 0 { e.head_since } else { None }.or(slot.started);
                let (Some(started), Some(ran_on)) = (started, slot.ran_on) else {
                    continue;
                };
                let live_task = LiveTask {
                    attempts: slot.attempts,
                    started_ms: wall_ms(started, mono, wall),
                    ran_on,
                };
                live.insert(*tid, live_task);
            }
        }
        live
    }
}

/// An `Instant` in the past as wall-clock milliseconds, given one reading of both clocks.
pub(super) fn wall_ms(at: Instant, mono: Instant, wall: i64) -> i64 {
    wall - mono.saturating_duration_since(at).as_millis() as i64
}

fn not_found(k: TaskKey) -> FlameError {
    FlameError::NotFound(format!("session {} has no task {}", k.session, k.task.0))
}

fn read_view(
    st: &mut dyn Storage,
    k: TaskKey,
    live: &HashMap<TaskId, LiveTask>,
) -> flame_core::Result<TaskView> {
    let mut v = st.get_task_view(k)?.ok_or_else(|| not_found(k))?;
    if let Some(l) = live.get(&k.task) {
        v.overlay(l);
    }
    Ok(v)
}

/// The page's task ids among a session's unfinished tasks in `state`, in task-id order.
fn unfinished_page(s: &Session, state: TaskState, q: &TaskQuery) -> Vec<TaskId> {
    let running = state == TaskState::Running;
    let mut ids: Vec<TaskId> = s
        .tasks
        .iter()
        .filter(|(_, slot)| slot.executor.is_some() == running)
        .map(|(t, _)| *t)
        .collect();
    ids.sort_unstable();
    let offset = usize::try_from(q.offset).unwrap_or(usize::MAX);
    ids.into_iter()
        .skip(offset)
        .take(q.limit as usize)
        .collect()
}

/// A page answered from storage, with running tasks overlaid from memory. `counts` are the
/// open session's live counts; a closed session's come from storage.
fn stored_page(
    st: &mut dyn Storage,
    q: &TaskQuery,
    counts: Option<TaskCounts>,
    live: &HashMap<TaskId, LiveTask>,
) -> flame_core::Result<proto::TaskList> {
    let counts = match counts {
        Some(c) => c,
        None => st
            .get_session(q.session)?
            .map(|(_, c)| c)
            .ok_or(FlameError::SessionNotFound(q.session))?,
    };
    let total = match q.state {
        None => counts.total(),
        Some(s) => counts.get(s),
    };
    let tasks = st
        .list_task_views(q.session, q.state, q.limit, q.offset)?
        .into_iter()
        .map(|mut v| {
            if let Some(l) = live.get(&v.key.task) {
                v.overlay(l);
            }
            v.into()
        })
        .collect();
    Ok(proto::TaskList { tasks, total })
}
