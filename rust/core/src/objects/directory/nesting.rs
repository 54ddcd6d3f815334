//! Refs nested inside objects (#12): `flame.put([ref1, ref2])`, or a result holding refs,
//! keeps the objects it refers to alive. Each container's children are recorded with its
//! creation; a child counts its live containers. A child whose creator deletes it while a
//! container still holds it is only marked released, and goes when its last container
//! goes. Deleting a container releases its children, so chains unwind transitively (the
//! directory's delete loops over what [`Nesting::drop_container`] answers).
//!
//! Cycles cannot form: a container's children exist before it does, and are fixed.

use std::collections::{HashMap, HashSet};

use crate::ids::ObjectId;

#[derive(Debug, Default)]
pub(super) struct Nesting {
    /// Container -> the objects its pickle refers to (each once).
    children: HashMap<ObjectId, Vec<ObjectId>>,
    /// Contained object -> how many live containers hold it (> 0 only).
    containers: HashMap<ObjectId, u32>,
    /// Deleted by their creator while still contained: to delete with their last container.
    released: HashSet<ObjectId>,
}

impl Nesting {
    /// Record `container`'s children (once: a second announcement changes nothing).
    pub fn add(&mut self, container: ObjectId, mut contained: Vec<ObjectId>) {
        if contained.is_empty() || self.children.contains_key(&container) {
            return;
        }
        contained.sort_unstable();
        contained.dedup();
        for c in &contained {
            *self.containers.entry(*c).or_default() += 1;
        }
        self.children.insert(container, contained);
    }

    /// A delete of `id` arrived: whether a live container still holds it (then it is
    /// marked released and must not be deleted yet).
    pub fn hold(&mut self, id: ObjectId) -> bool {
        if self.containers.contains_key(&id) {
            self.released.insert(id);
            return true;
        }
        self.released.remove(&id);
        false
    }

    /// `id` is deleted: its children lose a container; answers those now free to delete
    /// (released, and held by no other container).
    pub fn drop_container(&mut self, id: ObjectId) -> Vec<ObjectId> {
        let mut free = Vec::new();
        for c in self.children.remove(&id).unwrap_or_default() {
            let Some(n) = self.containers.get_mut(&c) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.containers.remove(&c);
                if self.released.remove(&c) {
                    free.push(c);
                }
            }
        }
        free
    }

    /// Every live container (an inline task result holding refs is one without bytes).
    pub fn containers(&self) -> impl Iterator<Item = &ObjectId> {
        self.children.keys()
    }

    /// How many containers hold `id` now.
    pub fn holding(&self, id: ObjectId) -> u32 {
        self.containers.get(&id).copied().unwrap_or(0)
    }
}
