//! Sending work and taking it back: feeding executors their window of tasks, the warm
//! (release-delay) and timeout indexes with the setters that keep them in step, unbinding,
//! and killing an executor whose running task must stop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Action, ExecutorState, Scheduler, Session};
use crate::ids::{ExecutorId, SessionId, TaskId, TaskKey};
use crate::model::{TaskFailure, TaskState};

impl Scheduler {
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

    /// Fail running tasks that are past their session's timeout and kill their executors
    /// (user code cannot be interrupted safely); the node reports the exit and the executor
    /// is replaced.
    pub(super) fn expire_timeouts(&mut self, now: Instant) {
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

    /// Send pending tasks of `sid` to its executors with room in their window (or only to
    /// `only`), one task per executor per round so a short queue spreads across executors.
    /// An executor takes the tasks waiting for its node first (data-aware), then the common
    /// queue; tasks waiting for other nodes are not its to take.
    /// O(E_s + tasks sent) for a whole session, O(window) for one executor: a result feeds
    /// just the executor that sent it.
    ///
    /// A task goes to an executor that is already busy (prefetch) only when it is not needed
    /// for an executor that is free, on its way, or could still be had (`held_back`): until
    /// then a long task would wait behind another while a slot stays idle. Empty executors
    /// are served first for the same reason.
    pub(super) fn feed(&mut self, sid: SessionId, only: Option<ExecutorId>, now: Instant) {
        let held_back = self.held_back(sid);
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if self.draining || !session.queued() {
            return;
        }
        let window = session.window(
            self.config.window,
            self.config.window_max,
            self.config.window_work.as_secs_f64(),
        );
        let mut ready: Vec<ExecutorId> = match only {
            Some(e) => vec![e],
            None => session.executors.iter().copied().collect(),
        };
        ready.retain(|e| {
            session.executors.contains(e)
                && self
                    .executors
                    .get(e)
                    .is_some_and(|x| !x.releasing && !x.blocked && x.inflight.len() < window)
        });
        // Empty executors first: a short queue goes to them, not behind a running task.
        ready.sort_unstable_by_key(|e| (self.executors.get(e).map_or(0, |x| x.inflight.len()), *e));
        let mut batches: HashMap<ExecutorId, Vec<(TaskId, Bytes, u32)>> = HashMap::new();
        let mut started = Vec::new();
        // Data-aware: executors left with nothing while tasks wait for other nodes, and
        // executors whose such wait ends because they got work.
        let mut passed = Vec::new();
        let mut served = Vec::new();
        'rounds: while !ready.is_empty() {
            let mut next = Vec::with_capacity(ready.len());
            for eid in ready {
                let Some(exec) = self.executors.get_mut(&eid) else {
                    continue;
                };
                if !exec.inflight.is_empty() && session.counts.pending as usize <= held_back {
                    // The rest waits for the executors that are coming (or a result here).
                    break 'rounds;
                }
                // A task waiting for this executor's node first, then the common queue, then
                // (once it waited long enough) tasks waiting for other nodes.
                let tid = match session.pop_local(exec.node) {
                    Some(tid) => {
                        exec.steals = false;
                        Some(tid)
                    }
                    None => pop_pending(session)
                        .or_else(|| exec.steals.then(|| session.pop_waiting()).flatten()),
                };
                let Some(tid) = tid else {
                    exec.steals = false;
                    if !session.queued() {
                        break 'rounds;
                    }
                    // The rest waits for executors on other nodes; an empty executor waits
                    // for one of its own at most `data_wait` (see `locality.rs`).
                    if exec.inflight.is_empty() && exec.passed_over.is_none() {
                        passed.push(eid);
                    }
                    continue;
                };
                if exec.passed_over.is_some() {
                    served.push(eid);
                }
                let Some(slot) = session.tasks.get_mut(&tid) else {
                    continue;
                };
                slot.attempts += 1;
                slot.executor = Some(eid);
                slot.started = Some(now);
                slot.ran_on = Some((eid, exec.node));
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
        for eid in served {
            self.set_passed_over(eid, None);
        }
        for eid in passed {
            self.set_passed_over(eid, Some(now));
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

    /// How many of `sid`'s pending tasks to keep for executors it does not use yet: the ones
    /// being started or handed over to it, plus as many more as it wants and the cluster
    /// could give (idle executors, free slots, warm executors of others, executors leaving
    /// another session). Cheap: O(1).
    fn held_back(&self, sid: SessionId) -> usize {
        let Some(s) = self.sessions.get(&sid) else {
            return 0;
        };
        let want = s.target().saturating_sub(s.held());
        let mut could_get =
            self.idle.len() + self.free_slots_total + self.warm.len() + self.leaving.len();
        if want > 0 && !self.warm.is_empty() {
            // Its own warm executors are fed as they are, not obtained. O(E_s), only when
            // some executor is warm.
            let own = s
                .executors
                .iter()
                .filter(|e| {
                    self.executors
                        .get(e)
                        .is_some_and(|x| x.idle_since.is_some())
                })
                .count();
            could_get = could_get.saturating_sub(own);
        }
        s.starting as usize + want.min(could_get)
    }

    /// Unbind executors that sat idle and bound for longer than the release delay, unless
    /// their session would drop below its minimum. O(log E) per expiry.
    pub(super) fn release_expired(&mut self, now: Instant) {
        let delay = self.config.release_delay;
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
        self.set_blocked(eid, false);
        self.set_idle_since(eid, None);
        self.set_releasing(eid, false);
        self.set_head_since(eid, None);
        self.set_passed_over(eid, None);
        let exec = self.executors.get_mut(&eid).expect("checked above");
        exec.state = ExecutorState::Unbinding(sid);
        exec.steals = false;
        exec.reserved_for = reserve_for;
        if reserve_for.is_none() {
            self.leaving.insert(eid);
        }
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
