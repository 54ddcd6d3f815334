//! Dropping a node whose credentials were revoked (`RevokeNode`): at once, not when its
//! connection happens to fail. It is handled as a lost node (`workers.rs`, `node_gone`) —
//! its executors are told to stop and no longer listened to, their tasks go back to the
//! queue — except that the running tasks are not charged an attempt
//! (`Scheduler::evict_node`: they did nothing wrong). Its stream ends with the reason, so
//! the node logs why it was dropped. Reconnecting is refused by the auth layer, which
//! consults the same revocation (`Security::cert_revoked`, the token registry).

use std::time::Instant;

use flame_core::ids::{ExecutorId, NodeId};
use tonic::Status;

use super::actor::Actor;
use super::workers::shutdown_command;

impl Actor {
    /// Drop every connected node named `name`; returns how many there were.
    pub(super) fn drop_node(&mut self, name: &str, reason: &str, now: Instant) -> u32 {
        let ids: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, link)| link.name == name)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(link) = self.nodes.remove(id) {
                tracing::warn!(node = %id, name, reason, "dropping a node whose credentials were revoked");
                let _ = link
                    .tx
                    .send(Err(Status::unauthenticated(reason.to_string())));
            }
            // Its executors may still be connected: stop them and stop listening, so their
            // work is done once — elsewhere.
            let orphans: Vec<ExecutorId> = self
                .sched
                .nodes()
                .filter(|n| n.id == *id)
                .flat_map(|n| n.executors.iter().copied())
                .collect();
            for eid in orphans {
                if let Some(tx) = self.executors.remove(&eid) {
                    let _ = tx.send(Ok(shutdown_command(reason)));
                }
            }
            self.sched.evict_node(*id, now);
            self.object_node_lost(*id);
        }
        ids.len() as u32
    }
}
