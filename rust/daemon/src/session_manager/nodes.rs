//! The cluster's nodes as the head sees them: what they report about themselves (slots,
//! CPUs, memory, the address they connected from), draining one, and describing them in
//! `ClusterInfo`.
//!
//! A drain starts either from the node (it got SIGTERM and sent `NodeDrain`) or from an
//! operator (`DrainNode`, `flame-daemon drain`). The scheduler then places nothing there and
//! retires its executors as their tasks end; once none is left the node is sent
//! `NodeDrained` and exits. A node that does not hear back within its own drain grace stops
//! anyway, and its unfinished tasks are re-run elsewhere as for any lost node.

use flame_core::ids::NodeId;
use flame_core::proto;
use flame_core::FlameError;

use super::actor::Actor;

impl Actor {
    /// Start draining `node`; `false` if it is not connected.
    pub(super) fn drain_node(&mut self, node: NodeId) -> bool {
        let Some(link) = self.nodes.get_mut(&node) else {
            return false;
        };
        if !link.draining {
            link.draining = true;
            tracing::info!(%node, name = %link.name, "draining node: nothing new goes there");
        }
        self.sched.drain_node(node)
    }

    /// `DrainNode`: find the node by id or name and drain it.
    pub(super) fn drain_node_by_ref(
        &mut self,
        target: &proto::NodeRef,
    ) -> Result<proto::NodeInfo, FlameError> {
        let found = self.nodes.iter().find(|(id, link)| {
            if target.id != 0 {
                id.0 == target.id
            } else {
                link.name == target.name
            }
        });
        let Some((&id, _)) = found else {
            let names: Vec<&str> = self.nodes.values().map(|l| l.name.as_str()).collect();
            let which = if target.id != 0 {
                format!("id {}", target.id)
            } else {
                format!("name '{}'", target.name)
            };
            return Err(FlameError::NotFound(format!(
                "no connected node with {which}; connected: [{}]",
                names.join(", ")
            )));
        };
        self.drain_node(id);
        self.node_info(id)
            .ok_or_else(|| FlameError::Internal(format!("node {id} vanished while draining")))
    }

    /// Tell every draining node with no executor left that it may exit (once).
    pub(super) fn release_drained_nodes(&mut self) {
        for (id, link) in self.nodes.iter_mut() {
            if link.draining && !link.told_drained && self.sched.node_drained(*id) {
                link.told_drained = true;
                tracing::info!(node = %id, name = %link.name, "node drained; telling it to exit");
                let drained = proto::node_command::Msg::Drained(proto::NodeDrained {});
                let _ = link.tx.send(Ok(proto::NodeCommand { msg: Some(drained) }));
            }
        }
    }

    fn node_info(&self, id: NodeId) -> Option<proto::NodeInfo> {
        let n = self.sched.nodes().find(|n| n.id == id)?;
        let link = self.nodes.get(&id);
        Some(proto::NodeInfo {
            id: n.id.0,
            name: n.name.clone(),
            slots: n.slots,
            executors: n.executors.len() as u32,
            busy: self.sched.busy_on(n.id) as u32,
            alive: link.is_some(),
            address: link.map(|l| l.peer.clone()).unwrap_or_default(),
            cpus: link.map_or(0, |l| l.cpus),
            memory_total: link.map_or(0, |l| l.memory_total),
            memory_available: link.map_or(0, |l| l.memory_available),
            draining: n.draining,
        })
    }

    pub(super) fn cluster_info(&self) -> proto::ClusterInfo {
        let mut ids: Vec<NodeId> = self.sched.nodes().map(|n| n.id).collect();
        ids.sort_unstable();
        let nodes = ids
            .into_iter()
            .filter_map(|id| self.node_info(id))
            .collect();
        let (pending, running) = self.sched.sessions().fold((0, 0), |(p, r), s| {
            (p + s.counts.pending, r + s.counts.running)
        });
        proto::ClusterInfo {
            nodes,
            sessions_open: self.sched.sessions().count() as u32,
            tasks_pending: pending,
            tasks_running: running,
        }
    }
}
