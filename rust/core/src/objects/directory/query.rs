//! The directory's read side: where an object is (`LocateObjects`), what a node holds (the
//! dashboard, `/metrics`), the bytes of a task's reads on a node (data-aware placement) and
//! pages of objects (`ListObjects`). Nothing here changes the directory.

use super::{Directory, Location, ObjectView};
use crate::ids::{ClientId, NodeId, ObjectId, TaskKey};

impl Directory {
    /// How many live containers hold refs to `id` (refs nested in other objects).
    pub fn containers_of(&self, id: ObjectId) -> u32 {
        self.nesting.holding(id)
    }

    /// The task whose result `id` is, if it is one.
    pub fn producer(&self, id: ObjectId) -> Option<TaskKey> {
        self.objects.get(&id)?.producer
    }

    /// Whether `id` is waiting for its task to run again.
    pub fn is_rebuilding(&self, id: ObjectId) -> bool {
        self.objects.get(&id).is_some_and(|e| e.rebuilding)
    }

    /// The objects `client` made (held, rebuilding or lost) and its inline task results
    /// holding refs (containers with no bytes), in id order.
    pub fn owned_by(&self, client: ClientId) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = self
            .objects
            .keys()
            .chain(self.lost.keys())
            .chain(self.nesting.containers())
            .filter(|id| id.owner() == client)
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn locate(&self, id: ObjectId) -> Location<'_> {
        if let Some(e) = self.objects.get(&id) {
            if e.rebuilding {
                return Location::Rebuilding { size: e.size };
            }
            return Location::Held {
                size: e.size,
                holders: &e.holders,
            };
        }
        match self.lost.get(&id) {
            Some(l) => Location::Lost {
                size: l.size,
                reason: &l.reason,
            },
            None => Location::Unknown,
        }
    }

    /// How many objects `node` holds, and their bytes.
    pub fn holdings(&self, node: NodeId) -> (usize, u64) {
        self.nodes
            .get(&node)
            .map_or((0, 0), |h| (h.ids.len(), h.bytes))
    }

    /// Bytes of `ids` that `node` holds (data-aware placement: where a task's reads are).
    pub fn bytes_on(&self, node: NodeId, ids: &[ObjectId]) -> u64 {
        ids.iter()
            .filter_map(|id| self.objects.get(id))
            .filter(|e| e.holders.contains(&node))
            .map(|e| e.size)
            .sum()
    }

    /// A page of the objects (those `node` holds, or all), in id order, and how many match.
    pub fn list(
        &self,
        node: Option<NodeId>,
        offset: usize,
        limit: usize,
    ) -> (Vec<ObjectView>, u64) {
        let mut ids: Vec<ObjectId> = match node {
            Some(n) => self
                .nodes
                .get(&n)
                .map(|h| h.ids.iter().copied().collect())
                .unwrap_or_default(),
            None => self.objects.keys().copied().collect(),
        };
        let total = ids.len() as u64;
        ids.sort_unstable();
        let page = ids
            .into_iter()
            .skip(offset)
            .take(limit)
            .filter_map(|id| {
                let e = self.objects.get(&id)?;
                Some(ObjectView {
                    id,
                    size: e.size,
                    holders: e.holders.clone(),
                    producer: e.producer,
                    rebuilding: e.rebuilding,
                })
            })
            .collect();
        (page, total)
    }
}

/// Data-aware placement reads the directory: the nodes that hold an object now (none while
/// it is lost or being rebuilt).
impl crate::scheduler::Locality for Directory {
    fn holders(&self, object: ObjectId, f: &mut dyn FnMut(NodeId)) {
        if let Location::Held { holders, .. } = self.locate(object) {
            holders.iter().for_each(|n| f(*n));
        }
    }
}
