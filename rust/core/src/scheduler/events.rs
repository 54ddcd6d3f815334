//! What happens to the scheduler: nodes come and go, executors register, bind, report results
//! and die, sessions open and close, tasks are submitted and cancelled. Each event updates the
//! state it names and queues actions; the caller then runs [`Scheduler::schedule`].

use std::time::Instant;

use bytes::Bytes;

use super::{Action, ExecutorState, Node, Scheduler};
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{key, ErrorKind, TaskFailure, TaskState};

impl Scheduler {
    /// A node registered (or re-registered with new capacity).
    pub fn add_node(&mut self, id: NodeId, name: String, slots: u32) {
        let node = self.nodes.entry(id).or_insert_with(|| Node {
            id,
            name: name.clone(),
            slots,
            executors: Default::default(),
            exiting: Default::default(),
            blocked: Default::default(),
            draining: false,
            free_key: None,
        });
        node.name = name;
        node.slots = slots;
        self.node_changed(id);
    }

    /// A node is gone: every executor on it is lost.
    pub fn remove_node(&mut self, id: NodeId, now: Instant) {
        let Some(node) = self.nodes.remove(&id) else {
            return;
        };
        if let Some(free) = node.free_key {
            self.free_nodes.remove(&(std::cmp::Reverse(free), id));
            self.free_slots_total -= free;
        }
        for eid in &node.exiting {
            self.preempted_exit(*eid);
        }
        for eid in node.executors {
            self.lose(
                eid,
                &format!("node {} ({}) was lost", id, node.name),
                false,
                now,
            );
        }
    }

    /// An executor process connected. `false` if the scheduler never asked for it.
    pub fn executor_registered(&mut self, eid: ExecutorId, now: Instant) -> bool {
        match self.executors.get(&eid) {
            Some(e) if e.state == ExecutorState::Starting => {
                self.became_idle(eid, now);
                true
            }
            _ => false,
        }
    }

    /// The node reports that an executor's process has exited: its slot is free again.
    pub fn executor_exited(&mut self, node: NodeId, eid: ExecutorId, reason: &str, now: Instant) {
        // Only a node speaks for its own executors.
        if self.executors.get(&eid).is_some_and(|e| e.node != node) {
            return;
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.exiting.remove(&eid);
        }
        self.node_changed(node);
        self.preempted_exit(eid);
        self.lose(eid, reason, false, now);
    }

    /// An executor's stream broke (its process may not have exited yet). Its tasks go back to
    /// the front of their queue, or fail with `ExecutorLost` once they have used all their
    /// attempts.
    pub fn executor_lost(&mut self, eid: ExecutorId, reason: &str, now: Instant) {
        self.lose(eid, reason, true, now);
    }

    /// An executor stopped answering heartbeats (a frozen process, a hung host): lost as if
    /// it had crashed — the running task's attempt counts, the ones queued behind it go back
    /// unchanged — and killed, since its process may wake up later. Its slot stays taken
    /// until the node reports the exit.
    pub fn executor_unresponsive(&mut self, eid: ExecutorId, reason: &str, now: Instant) {
        let Some(node) = self.executors.get(&eid).map(|e| e.node) else {
            return;
        };
        self.lose(eid, reason, true, now);
        self.actions.push(Action::Kill {
            node,
            executor: eid,
            reason: reason.to_string(),
        });
    }

    fn lose(&mut self, eid: ExecutorId, reason: &str, process_alive: bool, now: Instant) {
        let Some(exec) = self.forget_executor(eid, process_alive) else {
            return;
        };
        let sid = exec.inflight.front().and_then(|_| exec.session());
        let sid = sid.or(match exec.state {
            ExecutorState::Unbinding(s) => Some(s),
            _ => None,
        });
        let Some(sid) = sid else {
            return;
        };
        let mut requeue = Vec::new();
        let mut failed = Vec::new();
        if let Some(session) = self.sessions.get_mut(&sid) {
            let max_attempts = session.spec.max_retries.saturating_add(1);
            // Tasks run one at a time in window order: only the head can have started. The
            // ones queued behind it get their attempt back.
            let running = exec.head_since.and(exec.inflight.front().copied());
            for tid in exec.inflight.iter().copied() {
                let Some(slot) = session.tasks.get_mut(&tid) else {
                    continue;
                };
                if slot.executor != Some(eid) {
                    continue;
                }
                if Some(tid) != running {
                    slot.attempts = slot.attempts.saturating_sub(1);
                }
                if slot.attempts >= max_attempts {
                    failed.push((tid, slot.attempts));
                } else {
                    slot.executor = None;
                    session.counts.remove(TaskState::Running, 1);
                    session.counts.add(TaskState::Pending, 1);
                    requeue.push((tid, slot.attempts));
                }
            }
            for (tid, _) in requeue.iter().rev() {
                session.pending.push_front(*tid);
            }
            self.wake(sid);
        }
        for (tid, attempts) in requeue {
            self.actions.push(Action::RecordAttempts {
                key: key(sid, tid),
                attempts,
            });
        }
        for (tid, attempts) in failed {
            let msg = format!(
                "task {} of session {sid} was lost with its executor after {attempts} attempt(s): {reason}",
                tid.0
            );
            let failure = TaskFailure::new(ErrorKind::ErrorExecutorLost, msg);
            self.finish(
                key(sid, tid),
                TaskState::Failed,
                Bytes::new(),
                Some(failure),
            );
        }
        let _ = now;
    }

    /// The executor ran (or failed) on_session_enter for `sid`.
    pub fn session_entered(
        &mut self,
        eid: ExecutorId,
        sid: SessionId,
        error: Option<TaskFailure>,
        now: Instant,
    ) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        if exec.state != ExecutorState::Binding(sid) {
            return;
        }
        let Some(mut failure) = error else {
            exec.state = ExecutorState::Bound(sid);
            self.settle(eid, now);
            return;
        };
        // The service cannot start: fail everything of the session rather than rebinding
        // forever. The executor stays unbound (it said so) and becomes idle.
        failure.kind = ErrorKind::ErrorSessionEnterFailed;
        exec.inflight.clear();
        self.set_releasing(eid, false);
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.executors.remove(&eid);
        }
        self.touch(sid);
        self.became_idle(eid, now);
        self.fail_session(sid, failure);
    }

    /// Mark a session unable to run and fail all its unfinished tasks with `failure`.
    pub fn fail_session(&mut self, sid: SessionId, failure: TaskFailure) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        session.enter_failed = Some(failure.clone());
        session.pending.clear();
        self.touch(sid);
        let session = self.sessions.get_mut(&sid).expect("checked above");
        let mut tids: Vec<TaskId> = session.tasks.keys().copied().collect();
        tids.sort_unstable();
        let others: Vec<ExecutorId> = session.executors.iter().copied().collect();
        for tid in tids {
            self.finish(
                key(sid, tid),
                TaskState::Failed,
                Bytes::new(),
                Some(failure.clone()),
            );
        }
        for eid in others {
            if let Some(e) = self.executors.get_mut(&eid) {
                e.inflight.clear();
            }
            self.unbind(eid, None);
        }
    }

    /// The executor left `sid` after an unbind.
    pub fn session_left(&mut self, eid: ExecutorId, sid: SessionId, now: Instant) {
        if self
            .executors
            .get(&eid)
            .is_some_and(|e| e.state == ExecutorState::Unbinding(sid))
        {
            self.became_idle(eid, now);
        }
    }

    /// Results from one executor. A result for a task this executor no longer owns (it was
    /// cancelled or re-run elsewhere) is ignored: every task finishes exactly once.
    pub fn task_results(
        &mut self,
        eid: ExecutorId,
        results: Vec<(SessionId, TaskId, std::result::Result<Bytes, TaskFailure>)>,
        now: Instant,
    ) {
        for (sid, tid, outcome) in results {
            let owned = self
                .sessions
                .get(&sid)
                .and_then(|s| s.tasks.get(&tid))
                .is_some_and(|t| t.executor == Some(eid));
            if let Some(exec) = self.executors.get_mut(&eid) {
                let ran = exec.head_since.map(|t| now.saturating_duration_since(t));
                exec.inflight.retain(|t| *t != tid);
                // The next task in the window starts now.
                let next = (!exec.inflight.is_empty()).then_some(now);
                self.set_head_since(eid, next);
                if let (Some(ran), Some(session)) = (ran, self.sessions.get_mut(&sid)) {
                    session.record_run_time(ran.as_secs_f64());
                }
            }
            self.touch(sid);
            if !owned {
                continue;
            }
            match outcome {
                Ok(output) => self.finish(key(sid, tid), TaskState::Succeeded, output, None),
                Err(f) if f.retryable && self.retry(sid, tid) => {}
                Err(f) => self.finish(key(sid, tid), TaskState::Failed, Bytes::new(), Some(f)),
            }
        }
        self.settle(eid, now);
        if let Some(sid) = self.executors.get(&eid).and_then(|e| e.session()) {
            self.feed(sid, Some(eid), now);
        }
    }

    /// Put a task that failed with an exception the service wants retried back at the front
    /// of its queue, if it has attempts left. `false` if it has none.
    fn retry(&mut self, sid: SessionId, tid: TaskId) -> bool {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let max_attempts = session.spec.max_retries.saturating_add(1);
        let Some(slot) = session.tasks.get_mut(&tid) else {
            return false;
        };
        if slot.attempts >= max_attempts {
            return false;
        }
        slot.executor = None;
        let attempts = slot.attempts;
        session.counts.remove(TaskState::Running, 1);
        session.counts.add(TaskState::Pending, 1);
        session.pending.push_front(tid);
        self.wake(sid);
        self.actions.push(Action::RecordAttempts {
            key: key(sid, tid),
            attempts,
        });
        true
    }

    /// After an executor's work changed: give a drained, releasing executor back, or start
    /// its warm period when its session has nothing left to send (unless the session needs
    /// it to keep its minimum: then it stays bound without a release deadline).
    fn settle(&mut self, eid: ExecutorId, now: Instant) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        if !exec.inflight.is_empty() || exec.idle_since.is_some() {
            return;
        }
        let Some(sid) = exec.session() else {
            return;
        };
        if exec.releasing {
            let to = exec.reserved_for.take();
            if let Some(s) = to.and_then(|r| self.sessions.get_mut(&r)) {
                s.starting = s.starting.saturating_sub(1);
            }
            self.unbind(eid, to);
            return;
        }
        let warm = self
            .sessions
            .get(&sid)
            .is_none_or(|s| !s.queued() && s.kept() > s.reserved());
        if warm && self.node_over_slots(self.executors[&eid].node) {
            // Its node runs over its slots (after a nested wait): no warm period there.
            self.unbind(eid, None);
        } else if warm {
            self.set_idle_since(eid, Some(now));
        }
    }
}
