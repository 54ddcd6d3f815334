//! Removing a node the operator threw out (its credentials were revoked): like a lost node,
//! every executor on it is lost and its tasks go back to the queue — but the task each one
//! was running gets its attempt back, since the task did nothing wrong (a crash or a hang
//! counts; an eviction does not).

use std::time::Instant;

use super::Scheduler;
use crate::ids::NodeId;

impl Scheduler {
    /// Remove node `id` as [`Scheduler::remove_node`] does, without charging the running
    /// tasks an attempt.
    pub fn evict_node(&mut self, id: NodeId, now: Instant) {
        let executors: Vec<_> = self
            .nodes
            .get(&id)
            .map(|n| n.executors.iter().copied().collect())
            .unwrap_or_default();
        for eid in executors {
            let Some(exec) = self.executors.get(&eid) else {
                continue;
            };
            let (Some(tid), Some(sid)) = (
                exec.head_since.and(exec.inflight.front().copied()),
                exec.session(),
            ) else {
                continue;
            };
            let slot = self
                .sessions
                .get_mut(&sid)
                .and_then(|s| s.tasks.get_mut(&tid));
            if let Some(slot) = slot.filter(|slot| slot.executor == Some(eid)) {
                slot.attempts = slot.attempts.saturating_sub(1);
            }
        }
        self.remove_node(id, now);
    }
}
