//! What a node's loss does to the directory (#12): objects only it held are lost, naming
//! it, or, when they are task results, wait to be rebuilt by running their task again; and
//! how a rebuild ends when it cannot happen.

use super::{Directory, Lost, NodeLoss};
use crate::ids::{NodeId, ObjectId, TaskKey};

impl Directory {
    /// `node` is gone with everything it held. Objects left without a holder are lost
    /// (the reason names `node_name`), or, if they are task results, to be rebuilt.
    pub fn node_lost(&mut self, node: NodeId, node_name: &str) -> NodeLoss {
        let mut loss = NodeLoss::default();
        let Some(held) = self.nodes.remove(&node) else {
            return loss;
        };
        let mut ids: Vec<ObjectId> = held.ids.into_iter().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(entry) = self.objects.get_mut(&id) else {
                continue;
            };
            entry.holders.retain(|n| *n != node);
            if !entry.holders.is_empty() {
                continue;
            }
            match (entry.producer, id.producer()) {
                (Some(task), _) => {
                    entry.rebuilding = true;
                    loss.rebuild.push((id, task));
                }
                (None, Some(task)) => {
                    entry.rebuilding = true;
                    loss.orphans.push((id, task));
                }
                (None, None) => {
                    let size = entry.size;
                    self.objects.remove(&id);
                    let reason = format!(
                        "object {id} was lost with node {node_name}, which held its only copy"
                    );
                    self.lost.insert(id, Lost { size, reason });
                    loss.lost.push(id);
                }
            }
        }
        loss
    }

    /// The task that made `id`, found after the fact (see [`NodeLoss::orphans`]).
    pub fn set_producer(&mut self, id: ObjectId, key: TaskKey) {
        if let Some(e) = self.objects.get_mut(&id) {
            e.producer.get_or_insert(key);
        }
    }

    /// A rebuilding object cannot be rebuilt (its session is closed, its task failed).
    pub fn rebuild_failed(&mut self, id: ObjectId, reason: String) {
        if let Some(e) = self.objects.get(&id) {
            if e.rebuilding && e.holders.is_empty() {
                let size = e.size;
                self.objects.remove(&id);
                self.lost.insert(id, Lost { size, reason });
            }
        }
    }
}
