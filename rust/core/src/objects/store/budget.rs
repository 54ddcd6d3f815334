//! The store's accounting, pure (no files): which objects it holds, where (memory or the
//! spill dir), primary or cached copy, when each was last used, and what must go when the
//! memory held exceeds the budget.
//!
//! Order under pressure: cached copies first, least recently used first (they are evicted:
//! another node holds the primary, a later access fetches it again); then primaries, least
//! recently used first (they are spilled to disk, never deleted: they may be the only copy).
//! Each decision is `O(log n)` (one ordered set per kind of in-memory object).
//!
//! A *pinned* object is never chosen: a process pulled it and is about to map it (a copy
//! evicted between the pull and the map would be gone for that reader). A pin lasts until
//! released, or [`PIN_LEASE`] at most, so a reader that dies before releasing holds no
//! memory for long.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::ids::ObjectId;

/// Whether this node made the object (or a local process did) or copied it from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The object's first copy: stored here by its creator. Never evicted, only spilled.
    Primary,
    /// Fetched from another node; evicted first when memory is short.
    Cached,
}

/// Where an object's file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Memory,
    Spilled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    pub kind: Kind,
    pub place: Place,
    /// Logical time of the last use (a counter, not a clock: only the order matters).
    used: u64,
}

/// What must happen to bring the memory held back under the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete this cached copy.
    Evict(ObjectId),
    /// Move this primary to the spill dir.
    Spill(ObjectId),
}

/// Longest a pin holds without being released.
pub const PIN_LEASE: Duration = Duration::from_secs(60);

/// Pins of one object: how many readers hold one, and until when the latest lasts.
#[derive(Clone, Copy, Debug)]
struct Pin {
    count: u32,
    until: Instant,
}

#[derive(Debug)]
pub struct Budget {
    pins: HashMap<ObjectId, Pin>,
    limit: u64,
    entries: HashMap<ObjectId, Entry>,
    /// In-memory objects by last use, per kind of copy.
    lru_cached: BTreeSet<(u64, ObjectId)>,
    lru_primary: BTreeSet<(u64, ObjectId)>,
    clock: u64,
    memory_bytes: u64,
    spilled_bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            pins: HashMap::new(),
            limit,
            entries: HashMap::new(),
            lru_cached: BTreeSet::new(),
            lru_primary: BTreeSet::new(),
            clock: 0,
            memory_bytes: 0,
            spilled_bytes: 0,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, id: ObjectId) -> Option<Entry> {
        self.entries.get(&id).copied()
    }

    /// Every object held, with its size.
    pub fn held(&self) -> Vec<(ObjectId, u64)> {
        self.entries.iter().map(|(id, e)| (*id, e.size)).collect()
    }

    /// Ids held that match `keep`.
    pub fn ids_where(&self, keep: impl Fn(ObjectId) -> bool) -> Vec<ObjectId> {
        self.entries
            .keys()
            .copied()
            .filter(|id| keep(*id))
            .collect()
    }

    /// Records a new object as just used; replaces any entry of the same id.
    pub fn insert(&mut self, id: ObjectId, size: u64, kind: Kind, place: Place) {
        self.remove(id);
        self.clock += 1;
        let entry = Entry {
            size,
            kind,
            place,
            used: self.clock,
        };
        self.entries.insert(id, entry);
        self.link(id, entry);
    }

    /// Marks an object as just used (it moves to the back of its eviction order).
    pub fn touch(&mut self, id: ObjectId) {
        if let Some(entry) = self.entries.get(&id).copied() {
            self.unlink(id, entry);
            self.clock += 1;
            let entry = Entry {
                used: self.clock,
                ..entry
            };
            self.entries.insert(id, entry);
            self.link(id, entry);
        }
    }

    /// Keeps `id` from being evicted or spilled until [`Budget::unpin`] (or [`PIN_LEASE`]).
    pub fn pin(&mut self, id: ObjectId) {
        let until = Instant::now() + PIN_LEASE;
        let pin = self.pins.entry(id).or_insert(Pin { count: 0, until });
        pin.count += 1;
        pin.until = until;
    }

    /// Releases one pin of `id` (none held: nothing happens).
    pub fn unpin(&mut self, id: ObjectId) {
        if let Some(pin) = self.pins.get_mut(&id) {
            pin.count -= 1;
            if pin.count == 0 {
                self.pins.remove(&id);
            }
        }
    }

    fn pinned(pins: &HashMap<ObjectId, Pin>, id: ObjectId) -> bool {
        pins.get(&id).is_some_and(|p| p.until > Instant::now())
    }

    pub fn remove(&mut self, id: ObjectId) -> Option<Entry> {
        self.pins.remove(&id);
        let entry = self.entries.remove(&id)?;
        self.unlink(id, entry);
        Some(entry)
    }

    /// Moves an object's accounting to `place` (its file has moved, or is about to).
    pub fn set_place(&mut self, id: ObjectId, place: Place) {
        if let Some(entry) = self.entries.get(&id).copied() {
            self.unlink(id, entry);
            let entry = Entry { place, ..entry };
            self.entries.insert(id, entry);
            self.link(id, entry);
        }
    }

    /// What to evict or spill, in order, so that the memory held fits the budget; the
    /// accounting is updated as if done (evicted entries are gone, spilled ones are on
    /// disk). `protect` (the object being stored or read right now) is never chosen. When
    /// only protected objects remain the memory stays over the budget.
    pub fn plan(&mut self, protect: Option<ObjectId>) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.memory_bytes > self.limit {
            let pins = &self.pins;
            let pick = |set: &BTreeSet<(u64, ObjectId)>| {
                set.iter()
                    .map(|(_, id)| *id)
                    .find(|id| Some(*id) != protect && !Self::pinned(pins, *id))
            };
            if let Some(id) = pick(&self.lru_cached) {
                self.remove(id);
                actions.push(Action::Evict(id));
            } else if let Some(id) = pick(&self.lru_primary) {
                self.set_place(id, Place::Spilled);
                actions.push(Action::Spill(id));
            } else {
                break;
            }
        }
        actions
    }

    fn link(&mut self, id: ObjectId, e: Entry) {
        match e.place {
            Place::Memory => {
                self.memory_bytes += e.size;
                match e.kind {
                    Kind::Cached => self.lru_cached.insert((e.used, id)),
                    Kind::Primary => self.lru_primary.insert((e.used, id)),
                };
            }
            Place::Spilled => self.spilled_bytes += e.size,
        }
    }

    fn unlink(&mut self, id: ObjectId, e: Entry) {
        match e.place {
            Place::Memory => {
                self.memory_bytes -= e.size;
                self.lru_cached.remove(&(e.used, id));
                self.lru_primary.remove(&(e.used, id));
            }
            Place::Spilled => self.spilled_bytes -= e.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ObjectId = ObjectId(1);
    const B: ObjectId = ObjectId(2);
    const C: ObjectId = ObjectId(3);
    const D: ObjectId = ObjectId(4);

    #[test]
    fn copies_go_first_least_recently_used_then_primaries_spill() {
        let mut b = Budget::new(100);
        b.insert(A, 40, Kind::Primary, Place::Memory);
        b.insert(B, 30, Kind::Cached, Place::Memory);
        b.insert(C, 30, Kind::Cached, Place::Memory);
        assert!(b.plan(None).is_empty(), "exactly at the budget");
        b.touch(B); // C is now the least recently used copy
        b.insert(D, 50, Kind::Primary, Place::Memory);
        // 150 held: C (30) goes, still 120: B (30) goes, 90 fits.
        assert_eq!(b.plan(Some(D)), [Action::Evict(C), Action::Evict(B)]);
        assert_eq!((b.memory_bytes(), b.spilled_bytes(), b.len()), (90, 0, 2));
        // No copies left: the least recently used primary that is not protected spills.
        b.insert(C, 60, Kind::Primary, Place::Memory);
        assert_eq!(b.plan(Some(C)), [Action::Spill(A), Action::Spill(D)]);
        assert_eq!((b.memory_bytes(), b.spilled_bytes()), (60, 90));
        assert_eq!(b.get(A).map(|e| e.place), Some(Place::Spilled));
    }

    #[test]
    fn a_protected_object_alone_over_the_budget_stays() {
        let mut b = Budget::new(10);
        b.insert(A, 50, Kind::Primary, Place::Memory);
        assert!(b.plan(Some(A)).is_empty());
        assert_eq!(b.memory_bytes(), 50);
        assert_eq!(b.plan(None), [Action::Spill(A)]);
    }

    #[test]
    fn a_pinned_object_stays_until_released() {
        let mut b = Budget::new(100);
        b.insert(A, 60, Kind::Cached, Place::Memory);
        b.insert(B, 60, Kind::Primary, Place::Memory);
        b.pin(A);
        b.pin(B);
        assert!(
            b.plan(None).is_empty(),
            "both pinned: over the budget, nothing goes"
        );
        b.unpin(A);
        assert_eq!(b.plan(None), [Action::Evict(A)]);
        b.insert(A, 60, Kind::Cached, Place::Memory); // fetched again: no pin left over
        assert_eq!(b.plan(Some(B)), [Action::Evict(A)]);
    }

    #[test]
    fn removing_and_moving_keep_the_totals() {
        let mut b = Budget::new(100);
        b.insert(A, 10, Kind::Primary, Place::Spilled);
        b.insert(B, 20, Kind::Cached, Place::Memory);
        b.set_place(A, Place::Memory);
        assert_eq!((b.memory_bytes(), b.spilled_bytes()), (30, 0));
        assert_eq!(b.remove(B).map(|e| e.size), Some(20));
        assert_eq!(b.remove(B), None);
        b.insert(A, 5, Kind::Primary, Place::Memory); // replaces
        assert_eq!((b.memory_bytes(), b.len()), (5, 1));
        assert_eq!(b.held(), [(A, 5)]);
    }
}
