//! How the actor handles executors whose running task waits on other tasks of this cluster
//! (a task calling `flame.get` on tasks it submitted): the scheduler stops counting them
//! against their node's slots while they wait, and requeues the tasks they give back (see
//! `flame_core::scheduler` `blocking.rs` for the exact semantics).

use std::time::Instant;

use flame_core::ids::{ExecutorId, SessionId, TaskId};

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
}
