//! Draining a node (its process got SIGTERM, or an operator asked the head): nothing new is
//! started or bound there, and every executor on it leaves once the tasks already sent to it
//! have finished — an idle one at once, a bound one after an unbind (its session's
//! `on_session_exit` runs), a busy one when its window runs dry. Its sessions get executors
//! elsewhere as usual. Tasks still pending were never sent to the node, so they run
//! elsewhere; nothing is re-run, because nothing that was sent is taken back.
//!
//! When [`Scheduler::node_drained`] says so, the session manager tells the node it may exit.

use super::{Action, ExecutorState, Scheduler};
use crate::ids::{ExecutorId, NodeId};

impl Scheduler {
    /// Start draining node `id`; `false` if there is no such node. Draining twice is harmless.
    pub fn drain_node(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        node.draining = true;
        let mut executors: Vec<ExecutorId> = node.executors.iter().copied().collect();
        executors.sort_unstable();
        // Out of the free-node index: no spawn goes there any more.
        self.node_changed(id);
        for eid in executors {
            let Some(exec) = self.executors.get(&eid) else {
                continue;
            };
            match exec.state {
                // Retired as it registers or leaves its session (`became_idle`).
                ExecutorState::Starting | ExecutorState::Unbinding(_) => {}
                ExecutorState::Idle => self.retire(eid, "its node is draining"),
                ExecutorState::Binding(_) | ExecutorState::Bound(_) => {
                    if exec.inflight.is_empty() {
                        self.unbind(eid, None);
                    } else {
                        // Nothing more is sent to it; it unbinds once its window is done.
                        self.set_releasing(eid, true);
                    }
                }
            }
        }
        true
    }

    /// Whether a draining node has no executor left (none running, none exiting). A node the
    /// scheduler does not know counts as drained.
    pub fn node_drained(&self, id: NodeId) -> bool {
        self.nodes
            .get(&id)
            .is_none_or(|n| n.draining && n.executors.is_empty() && n.exiting.is_empty())
    }

    /// Stop an idle executor for good: its slot stays taken until the node reports the exit.
    pub(super) fn retire(&mut self, eid: ExecutorId, reason: &str) {
        let Some(exec) = self.forget_executor(eid, true) else {
            return;
        };
        self.actions.push(Action::Kill {
            node: exec.node,
            executor: eid,
            reason: reason.into(),
        });
    }
}
