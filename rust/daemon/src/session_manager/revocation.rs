//! Dropping a node whose credentials were revoked (`RevokeNode`): at once, not when its
//! connection happens to fail. It is handled as a lost node — its executors are told to
//! stop and no longer listened to, their tasks go back to the queue without an attempt
//! charged (the tasks did nothing wrong) — and its stream ends with the reason, so the node
//! logs why it was dropped. Reconnecting is refused by the auth layer, which consults the
//! same revocation (`Security::cert_revoked`, the token registry).

use std::time::Instant;

use flame_core::ids::NodeId;
use tonic::Status;

use super::actor::Actor;

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
            if let Some(link) = self.nodes.get(id) {
                tracing::warn!(node = %id, name, reason, "dropping a node whose credentials were revoked");
                let _ = link
                    .tx
                    .send(Err(Status::unauthenticated(reason.to_string())));
            }
            self.node_gone(*id, now);
        }
        ids.len() as u32
    }
}
