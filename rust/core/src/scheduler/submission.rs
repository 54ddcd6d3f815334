//! Sessions and their tasks in the scheduler: open, close, accept (deduplicate), enqueue,
//! cancel and watch.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::locality::{Locality, TaskReads};
use super::{Action, Scheduler, Session, TaskSlot};
use crate::error::{FlameError, Result};
use crate::ids::{SessionId, TaskId};
use crate::model::{key, ErrorKind, SessionSpec, TaskCounts, TaskFailure, TaskState};

/// What became of a cancel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task was pending and is now cancelled.
    Cancelled,
    /// The task was running: it is cancelled and its executor is being killed.
    Killed,
    /// The task is not unfinished here (already done, or unknown).
    NotFound,
}

impl Scheduler {
    /// Open a session (new, or reloaded from storage with its finished-task counts).
    pub fn open_session(
        &mut self,
        id: SessionId,
        spec: SessionSpec,
        created_ms: i64,
        counts: TaskCounts,
    ) {
        let tenant = if self.config.policies.tenant_fair_share {
            // The user names the tenant; without one, the client that opened the session is
            // its own tenant (so two programs of one person share like two people would).
            let name = if spec.user.is_empty() {
                (String::new(), spec.owner)
            } else {
                (spec.user.clone(), 0)
            };
            let next = self.tenant_ids.len() as u32 + 1;
            *self.tenant_ids.entry(name).or_insert(next)
        } else {
            0
        };
        if let Some(mut old) = self.sessions.remove(&id) {
            // Opened again (a restart reload racing a create): forget the old entry first.
            self.index.remove(&mut old);
        }
        let app_key = app_fingerprint(&spec);
        let mut s = Session::new(id, spec, created_ms);
        s.counts = TaskCounts {
            pending: 0,
            running: 0,
            ..counts
        };
        s.tenant = tenant;
        s.app_key = app_key;
        self.sessions.insert(id, s);
        // A minimum is reserved at once, before any task arrives.
        self.touch(id);
    }

    /// Close a session: cancel its unfinished tasks at once, kill the executors that run one
    /// (user code cannot be interrupted safely, and the tasks sent ahead would start after
    /// it) and unbind the others. A task sent ahead that never started is recorded so: no
    /// start time, no executor, its attempt not counted.
    pub fn close_session(&mut self, sid: SessionId) -> bool {
        self.close_session_failing(sid, None)
    }

    /// As [`Scheduler::close_session`]; with `failure`, its unfinished tasks fail with it
    /// instead of being cancelled (#13: a client whose lease ran out learns why, by name).
    pub fn close_session_failing(&mut self, sid: SessionId, failure: Option<TaskFailure>) -> bool {
        let Some(session) = self.sessions.get(&sid) else {
            return false;
        };
        let execs: Vec<_> = session.executors.iter().copied().collect();
        // The task each executor is running, and since when.
        let running: HashMap<TaskId, Instant> = execs
            .iter()
            .filter_map(|e| self.executors.get(e))
            .filter_map(|e| e.inflight.front().copied().zip(e.head_since))
            .collect();
        let session = self.sessions.get_mut(&sid).expect("checked above");
        session.pending.clear();
        let mut tids: Vec<TaskId> = session.tasks.keys().copied().collect();
        tids.sort_unstable();
        for (tid, slot) in session.tasks.iter_mut() {
            if slot.executor.is_none() {
                continue;
            }
            match running.get(tid) {
                Some(since) => slot.started = Some(*since),
                None => {
                    slot.started = None;
                    slot.ran_on = None;
                    slot.attempts = slot.attempts.saturating_sub(1);
                }
            }
        }
        for tid in tids {
            let (state, f) = match &failure {
                Some(f) => (TaskState::Failed, f.clone()),
                None => (
                    TaskState::Cancelled,
                    TaskFailure::new(
                        ErrorKind::ErrorCancelled,
                        format!("session {sid} was closed"),
                    ),
                ),
            };
            self.finish(key(sid, tid), state, Bytes::new(), Some(f));
        }
        for eid in execs {
            let Some(e) = self.executors.get_mut(&eid) else {
                continue;
            };
            if e.inflight.is_empty() {
                self.unbind(eid, None);
                continue;
            }
            // Forgotten at once (its slot stays taken until the node reports the exit), so
            // it is never bound again before the kill lands.
            let node = e.node;
            self.forget_executor(eid, true);
            self.actions.push(Action::Kill {
                node,
                executor: eid,
                reason: format!("session {sid} was closed while its task ran"),
            });
        }
        // Executors on their way to it (`reserved_for`) find it gone and become idle.
        if let Some(mut s) = self.sessions.remove(&sid) {
            self.index.remove(&mut s);
        }
        self.dirty.remove(&sid);
        true
    }

    /// Keep only the submissions that are new to the session — a task id at or below the
    /// highest one seen from its client is a resubmission — and record them as seen.
    ///
    /// # Errors
    /// `SessionNotFound` if the session is not open here.
    pub fn accept(
        &mut self,
        sid: SessionId,
        tasks: Vec<(TaskId, Bytes)>,
    ) -> Result<Vec<(TaskId, Bytes)>> {
        let session = self
            .sessions
            .get_mut(&sid)
            .ok_or(FlameError::SessionNotFound(sid))?;
        Ok(tasks
            .into_iter()
            .filter(|(tid, _)| {
                if session.resubmittable.remove(tid) {
                    return !session.tasks.contains_key(tid);
                }
                let counter = (tid.0 & 0xffff_ffff) as u32;
                let last = session.last_counter.entry(tid.client()).or_insert(0);
                if counter <= *last {
                    return false;
                }
                *last = counter;
                if !session.watching.is_empty() {
                    session.watching.remove(tid);
                }
                true
            })
            .collect())
    }

    /// A client watches these ids, which are not in memory: storage is being asked.
    pub fn looking_up(&mut self, sid: SessionId, tids: &[TaskId]) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.watching.extend(tids.iter().copied());
        }
    }

    /// Storage answered for `looked_up`; of `unknown` (never stored), the ids not accepted
    /// since are returned and may be resubmitted (see [`Scheduler::allow_resubmit`]).
    pub fn looked_up(
        &mut self,
        sid: SessionId,
        looked_up: &[TaskId],
        unknown: Vec<TaskId>,
    ) -> Vec<TaskId> {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Vec::new();
        };
        let still: Vec<TaskId> = unknown
            .into_iter()
            .filter(|t| s.watching.contains(t))
            .collect();
        for t in looked_up {
            s.watching.remove(t);
        }
        still
    }

    /// Queue accepted (and now durable) tasks, or restored ones after a restart. A session
    /// whose service failed to start fails them at once.
    pub fn enqueue(
        &mut self,
        sid: SessionId,
        tasks: Vec<(TaskId, Bytes, u32)>,
        watcher: Option<u64>,
    ) {
        self.enqueue_tasks(sid, tasks, Vec::new(), watcher, None);
    }

    /// Queue a task that succeeded once more, to rebuild its lost result (lineage). It
    /// leaves the succeeded count, so its new end counts it once, not twice.
    pub fn rerun(&mut self, sid: SessionId, task: (TaskId, Bytes, u32)) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            if !s.tasks.contains_key(&task.0) {
                s.counts.remove(TaskState::Succeeded, 1);
            }
        }
        self.enqueue(sid, vec![task], None);
    }

    /// [`Scheduler::enqueue`] for tasks some of which read objects: `reads` lists those
    /// (the others read nothing). With the data-aware policy such a task waits for an
    /// executor of its session on a node that `locality` says holds most of its bytes, or
    /// for one with nothing else to do for `data_wait` (see `locality.rs`).
    pub fn enqueue_reading(
        &mut self,
        sid: SessionId,
        tasks: Vec<(TaskId, Bytes, u32)>,
        reads: Vec<(TaskId, TaskReads)>,
        watcher: Option<u64>,
        locality: &dyn Locality,
    ) {
        self.enqueue_tasks(sid, tasks, reads, watcher, Some(locality));
    }

    fn enqueue_tasks(
        &mut self,
        sid: SessionId,
        tasks: Vec<(TaskId, Bytes, u32)>,
        reads: Vec<(TaskId, TaskReads)>,
        watcher: Option<u64>,
        placing: Option<&dyn Locality>,
    ) {
        // Only batches with reads pay for placing them (most have none: no allocation).
        let placing = placing.filter(|_| self.config.policies.data_aware && !reads.is_empty());
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mut reads: HashMap<TaskId, TaskReads> = reads.into_iter().collect();
        let mut tids = Vec::with_capacity(tasks.len());
        for (tid, input, attempts) in tasks {
            let slot = TaskSlot {
                input,
                attempts,
                executor: None,
                started: None,
                ran_on: None,
                watcher,
                reads: if reads.is_empty() {
                    TaskReads::default()
                } else {
                    reads.remove(&tid).unwrap_or_default()
                },
                waits: None,
            };
            match session.tasks.insert(tid, slot) {
                None => {
                    session.counts.add(TaskState::Pending, 1);
                    tids.push(tid);
                }
                Some(old) => {
                    if old.waits.is_some() {
                        session.stop_waiting();
                    }
                }
            }
            let counter = (tid.0 & 0xffff_ffff) as u32;
            let last = session.last_counter.entry(tid.client()).or_insert(0);
            *last = (*last).max(counter);
        }
        self.dirty.insert(sid);
        self.to_feed.insert(sid);
        match (session.enter_failed.clone(), placing) {
            (None, None) => session.pending.extend(tids),
            (None, Some(locality)) => {
                for tid in tids {
                    self.queue_task(sid, tid, locality);
                }
            }
            (Some(f), _) => {
                for tid in tids {
                    self.finish(
                        key(sid, tid),
                        TaskState::Failed,
                        Bytes::new(),
                        Some(f.clone()),
                    );
                }
            }
        }
    }

    /// Cancel one task. A running task's executor is killed (user code cannot be interrupted
    /// safely); the session manager replaces it.
    pub fn cancel(&mut self, sid: SessionId, tid: TaskId) -> CancelOutcome {
        let Some(slot) = self.sessions.get(&sid).and_then(|s| s.tasks.get(&tid)) else {
            return CancelOutcome::NotFound;
        };
        let running_on = slot.executor;
        let f = TaskFailure::new(
            ErrorKind::ErrorCancelled,
            format!("task {} was cancelled", tid.0),
        );
        self.finish(key(sid, tid), TaskState::Cancelled, Bytes::new(), Some(f));
        let Some(eid) = running_on else {
            return CancelOutcome::Cancelled;
        };
        self.kill_running(
            eid,
            tid,
            format!("task {} of {sid} was cancelled while running", tid.0),
        );
        CancelOutcome::Killed
    }

    /// The daemon told a client it never stored these tasks: accept them when they come again,
    /// whatever the client submitted in between. `false` if the session is not open here.
    pub fn allow_resubmit(&mut self, sid: SessionId, tids: &[TaskId]) -> bool {
        match self.sessions.get_mut(&sid) {
            Some(s) => {
                s.resubmittable.extend(tids.iter().copied());
                true
            }
            None => false,
        }
    }

    /// Route the completion of an unfinished task to `watcher`. `false` if the task is not
    /// unfinished here (the caller answers from storage).
    pub fn watch(&mut self, sid: SessionId, tid: TaskId, watcher: u64) -> bool {
        match self
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.tasks.get_mut(&tid))
        {
            Some(slot) => {
                slot.watcher = Some(watcher);
                true
            }
            None => false,
        }
    }
}

/// What an executor of this session loads: two sessions with the same fingerprint run the
/// same service on the same interpreter (data-aware placement prefers such executors).
fn app_fingerprint(spec: &SessionSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.application.hash(&mut h);
    spec.app_spec.hash(&mut h);
    spec.python.hash(&mut h);
    h.finish()
}
