//! The head's directory of object locations (#12): for each object its size, the nodes that
//! hold it (primary first, then cached copies), and the task that made it when it is a task's
//! result (lineage); for each node, what it holds and how many bytes.
//!
//! Pure: no I/O, no clock, no protocol types. The session manager feeds it what creators and
//! nodes announce and carries out what it answers — delete commands to holders, re-runs of
//! the tasks whose results were lost. Each operation costs O(objects it touches), except
//! [`Directory::list`] (sorts the page's candidates) and the owner sweeps (one pass).
//!
//! States of an id: held (≥ 1 holder); rebuilding (its only holders are gone and its task
//! runs again; no holder); lost (no holder and no way back: a tombstone with the reason, kept
//! until the object is deleted, so `LocateObjects` can say what happened); unknown.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::ids::{ClientId, NodeId, ObjectId, TaskId, TaskKey};

use nesting::Nesting;

/// Deleted ids remembered, so a copy a node announces after the delete is deleted too.
const DELETED_KEPT: usize = 1 << 16;

/// What the head knows of every object stored on a node.
#[derive(Debug, Default)]
pub struct Directory {
    objects: HashMap<ObjectId, Entry>,
    nodes: HashMap<NodeId, Holdings>,
    /// Objects with no holder left and no way to rebuild them: why.
    lost: HashMap<ObjectId, Lost>,
    deleted: HashSet<ObjectId>,
    deleted_order: VecDeque<ObjectId>,
    /// Refs pickled inside objects: what keeps a contained object alive.
    nesting: Nesting,
    /// Tasks whose result objects were deleted since the last `take_released_tasks`.
    released_tasks: Vec<TaskKey>,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    /// Primary first. Empty only while rebuilding.
    holders: Vec<NodeId>,
    producer: Option<TaskKey>,
    rebuilding: bool,
}

#[derive(Debug, Default)]
struct Holdings {
    ids: HashSet<ObjectId>,
    bytes: u64,
}

#[derive(Debug)]
struct Lost {
    size: u64,
    reason: String,
}

/// What [`Directory::add`] made of an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// A new object; the node holds its primary copy.
    Primary,
    /// Another holder of a known object (a cached copy), or the rebuilt primary.
    Copy,
    /// The node was already known to hold it: nothing changed.
    Known,
    /// The object was deleted: the node should delete its copy too.
    Deleted,
}

/// Where an object is, as `LocateObjects` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    Held {
        size: u64,
        holders: &'a [NodeId],
    },
    /// Its task runs again to make it: ask later.
    Rebuilding {
        size: u64,
    },
    Lost {
        size: u64,
        reason: &'a str,
    },
    Unknown,
}

/// What a node's loss did to the objects it held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeLoss {
    /// Left without a holder and not a task's result: lost for good.
    pub lost: Vec<ObjectId>,
    /// Task results left without a holder: their tasks must run again (now `rebuilding`).
    pub rebuild: Vec<(ObjectId, TaskKey)>,
    /// Task results whose session is not known (a node announced them to a restarted
    /// head): rebuilding too, once the caller finds their task's session
    /// ([`Directory::set_producer`]); the id names the task.
    pub orphans: Vec<(ObjectId, TaskId)>,
}

/// One object as `ListObjects` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectView {
    pub id: ObjectId,
    pub size: u64,
    /// Primary first; empty while rebuilding.
    pub holders: Vec<NodeId>,
    pub producer: Option<TaskKey>,
    pub rebuilding: bool,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Objects known (held or rebuilding).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// `node` holds `id` of `size` bytes: a creator's announcement (the first holder is the
    /// primary), a node's fetched copy, or a task's result (`producer`, for lineage). An
    /// object that was lost or rebuilding is held again.
    pub fn add(
        &mut self,
        id: ObjectId,
        size: u64,
        node: NodeId,
        producer: Option<TaskKey>,
    ) -> Added {
        self.insert(id, size, node, producer, false)
    }

    /// [`Directory::add`] from the object's creator (a client's announcement, a task's
    /// result): `node` holds the primary copy, even if a node announced a copy first (the
    /// two announcements travel on different streams).
    pub fn add_primary(
        &mut self,
        id: ObjectId,
        size: u64,
        node: NodeId,
        producer: Option<TaskKey>,
    ) -> Added {
        self.insert(id, size, node, producer, true)
    }

    fn insert(
        &mut self,
        id: ObjectId,
        size: u64,
        node: NodeId,
        producer: Option<TaskKey>,
        primary: bool,
    ) -> Added {
        if self.deleted.contains(&id) {
            return Added::Deleted;
        }
        let lost = self.lost.remove(&id);
        let entry = self.objects.entry(id).or_insert_with(|| Entry {
            // A lost object's size stays what was first announced.
            size: lost.map_or(size, |l| l.size),
            holders: Vec::new(),
            producer: None,
            rebuilding: false,
        });
        if entry.producer.is_none() {
            entry.producer = producer;
        }
        if let Some(at) = entry.holders.iter().position(|n| *n == node) {
            if primary && at > 0 {
                entry.holders[..=at].rotate_right(1);
            }
            return Added::Known;
        }
        entry.rebuilding = false;
        if primary {
            entry.holders.insert(0, node);
        } else {
            entry.holders.push(node);
        }
        let size = entry.size;
        let first = entry.holders.len() == 1;
        let h = self.nodes.entry(node).or_default();
        h.ids.insert(id);
        h.bytes += size;
        if first {
            Added::Primary
        } else {
            Added::Copy
        }
    }

    /// `node` no longer holds `id` (an evicted copy, a file it lost). If that was the last
    /// holder, the object is lost, the reason naming `node_name`; returns whether it was.
    pub fn remove(&mut self, id: ObjectId, node: NodeId, node_name: &str) -> bool {
        let Some(entry) = self.objects.get_mut(&id) else {
            return false;
        };
        let Some(at) = entry.holders.iter().position(|n| *n == node) else {
            return false;
        };
        entry.holders.remove(at);
        let size = entry.size;
        if let Some(h) = self.nodes.get_mut(&node) {
            h.ids.remove(&id);
            h.bytes = h.bytes.saturating_sub(size);
        }
        if !entry.holders.is_empty() {
            return false;
        }
        self.objects.remove(&id);
        let reason = format!("object {id} was removed from node {node_name}, its last holder");
        self.lost.insert(id, Lost { size, reason });
        true
    }

    /// Forget these objects; answers which node must delete which of them. An object still
    /// inside a live container is only marked released: it goes with its last container.
    /// Deleting a container releases what it holds (transitively).
    pub fn delete(&mut self, ids: &[ObjectId]) -> BTreeMap<NodeId, Vec<ObjectId>> {
        let mut tell: BTreeMap<NodeId, Vec<ObjectId>> = BTreeMap::new();
        let mut work: Vec<ObjectId> = ids.iter().rev().copied().collect();
        while let Some(id) = work.pop() {
            if self.nesting.hold(id) {
                continue;
            }
            self.forget(id, &mut tell);
            work.extend(self.nesting.drop_container(id));
        }
        tell
    }

    fn forget(&mut self, id: ObjectId, tell: &mut BTreeMap<NodeId, Vec<ObjectId>>) {
        self.lost.remove(&id);
        if self.deleted.insert(id) {
            self.deleted_order.push_back(id);
            if self.deleted_order.len() > DELETED_KEPT {
                if let Some(old) = self.deleted_order.pop_front() {
                    self.deleted.remove(&old);
                }
            }
        }
        let Some(entry) = self.objects.remove(&id) else {
            return;
        };
        self.released_tasks.extend(entry.producer);
        for node in entry.holders {
            if let Some(h) = self.nodes.get_mut(&node) {
                h.ids.remove(&id);
                h.bytes = h.bytes.saturating_sub(entry.size);
            }
            tell.entry(node).or_default().push(id);
        }
    }

    /// The tasks whose result objects were deleted since the last call: they will not run
    /// again, so their kept inputs can go.
    pub fn take_released_tasks(&mut self) -> Vec<TaskKey> {
        std::mem::take(&mut self.released_tasks)
    }

    /// `container`'s pickle holds refs to `contained`: they stay alive while it does. Said
    /// once, with the container's creation; a deleted container holds nothing.
    pub fn contains(&mut self, container: ObjectId, contained: &[ObjectId]) {
        if self.deleted.contains(&container) {
            return;
        }
        let live: Vec<ObjectId> = contained
            .iter()
            .copied()
            .filter(|c| *c != container && !self.deleted.contains(c))
            .collect();
        self.nesting.add(container, live);
    }

    /// Delete everything `client` made (its lease ran out).
    pub fn delete_owner(&mut self, client: ClientId) -> BTreeMap<NodeId, Vec<ObjectId>> {
        let ids = self.owned_by(client);
        self.delete(&ids)
    }
}

#[cfg(test)]
mod tests;

mod loss;
mod nesting;
mod query;
