//! What the actor contributes to introspection, and the unary cancel. Stored rows are read
//! on reader connections (`crate::reads`), never here nor on the storage writer: the actor
//! only answers what memory alone knows — an open session's live counts, which tasks run
//! right now, where, since when — found through the session's executors (a handful), never
//! by walking its task table.

use std::collections::HashMap;
use std::time::Instant;

use flame_core::ids::{SessionId, TaskId, TaskKey};
use flame_core::model::{now_ms, TaskCounts};
use flame_core::proto;
use flame_core::scheduler::{CancelOutcome, ExecutorState, Session};
use flame_core::storage::Storage;
use flame_core::view::{LiveTask, TaskView};
use flame_core::FlameError;

use super::actor::Actor;
use super::apply::open_info;
use super::Reply;

/// What memory alone knows, for a read made on a reader connection (`crate::reads`).
#[derive(Debug, Default)]
pub struct LiveView {
    /// The named session if it is open, or every open session when none was named.
    pub open: Vec<proto::SessionInfo>,
    /// The named session's task counts, if it is open.
    pub counts: Option<TaskCounts>,
    /// The named session as it closed, if it is among the last ones closed: its counts
    /// then need no counting in storage.
    pub closed: Option<proto::SessionInfo>,
    /// Its tasks sent to an executor (running, as far as a reader can tell), by id.
    pub dispatched: Vec<TaskId>,
    /// What memory knows of those that have started.
    pub running: HashMap<TaskId, LiveTask>,
}

impl Actor {
    /// Answer what memory knows of `session` (or of every open session), a few lookups, no
    /// storage read. The answer waits until every write queued before it is committed: a
    /// read the caller then makes on a reader connection sees all of them.
    pub(super) fn live_view(&self, session: Option<SessionId>, reply: Reply<LiveView>) {
        let mut view = LiveView::default();
        match session {
            None => view.open = self.sched.sessions().map(open_info).collect(),
            Some(id) => {
                if let Some(s) = self.sched.session(id) {
                    view.open.push(open_info(s));
                    view.counts = Some(s.counts);
                    view.dispatched = self.dispatched_in(s);
                    view.running = self.running_in(id);
                } else {
                    let recent = self.closed_recently.iter().find(|s| s.id == id.0);
                    view.closed = recent.cloned();
                }
            }
        }
        // A failed commit is the writer's to report; the reader sees what was committed.
        self.store.write(Vec::new(), move |_| {
            let _ = reply.send(Ok(view));
        });
    }

    /// A session's tasks that are on an executor, in task-id order: found through its
    /// executors' windows (a handful), not by walking its task table.
    fn dispatched_in(&self, s: &Session) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = s
            .executors
            .iter()
            .filter_map(|eid| self.sched.executor(*eid))
            .flat_map(|e| e.inflight.iter().copied())
            .filter(|t| s.tasks.get(t).is_some_and(|slot| slot.executor.is_some()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn get_task(&self, k: TaskKey, reply: Reply<proto::TaskInfo>) {
        let live = self.running_in(k.session);
        self.store.read(move |st| {
            let _ = reply.send(read_view(st, k, &live).map(Into::into));
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
