//! How the actor handles nested calls (tasks that call services): executors whose running
//! task waits on other tasks of this cluster — the scheduler stops counting them against
//! their node's slots while they wait, and requeues the tasks they give back (see
//! `flame_core::scheduler` `blocking.rs` for the exact semantics) — and the sessions tasks
//! open, which are closed when the process of the executor that opened them ends (a task
//! killed by cancel or timeout cannot close them itself; one that ends normally does).

use std::time::Instant;

use flame_core::ids::{ExecutorId, SessionId, TaskId};
use flame_core::model::now_ms;
use flame_core::storage::WriteOp;

use super::actor::Actor;

impl Actor {
    pub(super) fn executor_waiting(
        &mut self,
        executor: ExecutorId,
        blocked: Option<bool>,
        session: SessionId,
        returned: &[TaskId],
        now: Instant,
    ) {
        // Only an executor whose stream this actor holds speaks; a late message from one
        // already declared lost changes nothing.
        if !self.executors.contains_key(&executor) {
            return;
        }
        match blocked {
            Some(true) => {
                tracing::debug!(%executor, "executor blocked in a nested wait");
                self.sched.executor_blocked(executor, now);
            }
            Some(false) => {
                tracing::debug!(%executor, "executor back from a nested wait");
                self.sched.executor_unblocked(executor, now);
            }
            None => {}
        }
        if !returned.is_empty() {
            self.sched.tasks_returned(executor, session, returned, now);
        }
    }

    /// Remember that a task on `executor` opened `session`; sessions of that executor that
    /// are closed already are forgotten here, so the list stays as short as what is open.
    pub(super) fn nested_session(&mut self, executor: ExecutorId, session: SessionId) {
        let sessions = self.nested_sessions.entry(executor).or_default();
        sessions.retain(|s| self.sched.session(*s).is_some());
        sessions.push(session);
    }

    /// The process of `executor` ended: close the sessions its tasks opened and left open.
    pub(super) fn close_nested_sessions(&mut self, executor: ExecutorId, now: Instant) {
        let Some(sessions) = self.nested_sessions.remove(&executor) else {
            return;
        };
        for sid in sessions {
            if self.sched.session(sid).is_none() {
                continue;
            }
            tracing::info!(session = %sid, %executor, "closing a session whose task's executor ended");
            self.remember_closed(sid);
            self.sched.close_session(sid);
            self.startup_failures.remove(&sid);
            self.store.write_only(vec![WriteOp::CloseSession {
                id: sid,
                closed_ms: now_ms(),
            }]);
        }
        let _ = now;
    }
}
