//! The head's answers about objects (#12): where an object is (`LocateObjects`), where an
//! off-node client should upload a new one (`PlaceObject`), and the per-node rows of the
//! dashboard and `/metrics`.

use flame_core::ids::ObjectId;
use flame_core::objects::directory::{Location, ObjectView};
use flame_core::proto;
use flame_core::FlameError;

use super::actor::Actor;
use super::objects::{NodeObjects, NodeStore};

impl Actor {
    pub(super) fn locate(&mut self, id: ObjectId) -> proto::ObjectLocation {
        // A rebuild whose task is no longer anywhere (its session closed, the task failed
        // or was cancelled) will never finish: lost.
        if let Some(key) = self.stalled_rebuild(id) {
            self.object_dir.dir.rebuild_failed(
                id,
                format!("object {id} was lost and its task {key} did not rebuild it"),
            );
        }
        let mut loc = proto::ObjectLocation {
            object_id: id.0,
            ..Default::default()
        };
        match self.object_dir.dir.locate(id) {
            Location::Held { size, holders } => {
                loc.size = size;
                loc.holders = holders
                    .iter()
                    .map(|n| {
                        let s = self.object_dir.nodes.get(n);
                        proto::ObjectHolder {
                            node_id: n.0,
                            node_name: s.map(|s| s.name.clone()).unwrap_or_default(),
                            address: s.map(|s| s.address.clone()).unwrap_or_default(),
                        }
                    })
                    .collect();
            }
            Location::Rebuilding { size } => {
                loc.size = size;
                loc.rebuilding = true;
            }
            Location::Lost { size, reason } => {
                loc.size = size;
                loc.lost = reason.to_string();
            }
            Location::Unknown => {
                loc.lost = format!("object {id} is not known (never stored, or deleted)");
            }
        }
        loc
    }

    /// The live, non-draining node with an object server and the most free budget.
    pub(super) fn place(&self, size: u64) -> Result<proto::ObjectHolder, FlameError> {
        let free = |s: &NodeStore| s.stats.budget_bytes.saturating_sub(s.stats.memory_bytes);
        let best = self
            .object_dir
            .nodes
            .iter()
            .filter(|(id, s)| {
                !s.address.is_empty() && self.nodes.get(id).is_some_and(|l| !l.draining)
            })
            .max_by_key(|(id, s)| (free(s), std::cmp::Reverse(**id)));
        let Some((id, s)) = best else {
            // The head keeps no objects itself: a bare head needs a node to put them on.
            return Err(FlameError::FailedPrecondition(
                if self.object_dir.nodes.is_empty() {
                    format!(
                        "cannot store an object of {size} bytes: no node with an object store has \
                     joined this cluster (start one with `flame-daemon node --head <address>`)"
                    )
                } else {
                    format!(
                    "cannot store an object of {size} bytes: no live, non-draining node serves \
                     objects over the network"
                )
                },
            ));
        };
        Ok(proto::ObjectHolder {
            node_id: id.0,
            node_name: s.name.clone(),
            address: s.address.clone(),
        })
    }

    /// Objects and bytes per connected node, for the dashboard and `/metrics`.
    pub(super) fn node_objects(&self) -> Vec<NodeObjects> {
        let mut rows: Vec<NodeObjects> = self
            .object_dir
            .nodes
            .iter()
            .map(|(id, s)| {
                let (objects, bytes) = self.object_dir.dir.holdings(*id);
                NodeObjects {
                    node: *id,
                    name: s.name.clone(),
                    objects: objects as u64,
                    bytes,
                    stats: s.stats,
                }
            })
            .collect();
        rows.sort_unstable_by_key(|r| r.node);
        rows
    }
}

pub(super) fn object_info(v: ObjectView) -> proto::ObjectInfo {
    let mut holders = v.holders.into_iter();
    proto::ObjectInfo {
        object_id: v.id.0,
        size: v.size,
        primary_node: holders.next().map_or(0, |n| n.0),
        copy_nodes: holders.map(|n| n.0).collect(),
        session_id: v.producer.map_or(0, |k| k.session.0),
        task_id: v.producer.map_or(0, |k| k.task.0),
    }
}
