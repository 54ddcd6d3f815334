//! Object locality for the data-aware policy: the objects a task reads, where their bytes
//! are ([`Locality`], fed by the head's object directory), and how a task waits for them.
//!
//! A task that reads objects prefers the nodes holding most of its bytes: those holding at
//! least [`NEAR_BEST`] of what the best node holds, when that is at least `data_min_bytes`
//! (moving less costs less than waiting) and when at most [`MAX_PREFERRED`] nodes qualify
//! (data on many nodes is as good as everywhere). Such a task waits in its session's queue
//! of each of those nodes (`Session::local`) instead of the common queue; an executor of the
//! session takes tasks waiting for its node first, then the common queue.
//!
//! The wait is bounded as in delay scheduling (Zaharia et al., EuroSys 2010): an executor
//! with nothing it may take while tasks of its session wait for other nodes is *passed
//! over*; after `data_wait` of that it takes the oldest of those tasks, and keeps taking
//! them until it runs out of work. So no executor of a session idles longer than `data_wait`
//! while the session has work, a task waits at most `data_wait` once an executor is free
//! for it anywhere, and a deep queue still runs where its data is (a per-task deadline
//! counted from submission would send most of it anywhere). Fair share is not involved:
//! locality chooses among a session's own executors, and where its next executor comes from
//! (`placement.rs`), never how many it gets.
//!
//! Preferences are computed once, when a task is queued (the directory is asked then); a
//! task that comes back to the queue (its executor was lost, it was preempted or handed
//! back) goes to the common queue. Tasks restored after a restart carry no reads.
//!
//! Cost: a preference is O(reads × holders) when queued; taking a waiting task is O(1)
//! amortized (entries of tasks taken from another queue are dropped when met); a passed-over
//! executor costs O(log E) in the wait index.

use std::collections::HashMap;
use std::time::Instant;

use super::{Scheduler, Session};
use crate::ids::{ExecutorId, NodeId, ObjectId, SessionId, TaskId};

/// A task prefers nodes holding at least this share of what the best node holds (ties, and
/// near-ties such as a large object plus a small one held elsewhere, all count).
pub const NEAR_BEST: f64 = 0.9;

/// When more nodes than this hold a task's data, it waits for none of them.
pub const MAX_PREFERRED: usize = 4;

/// An object a task reads, and its size in bytes (as declared in `TaskSubmission.reads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRead {
    pub id: ObjectId,
    pub size: u64,
}

/// The objects a task reads. Most tasks read none: an empty box does not allocate.
pub type TaskReads = Box<[ObjectRead]>;

/// Where objects are. The session manager implements it over the head's object directory;
/// the scheduler asks it only about tasks that read objects, when they are queued.
pub trait Locality {
    /// Call `f` once with every node that holds a copy of `object` (never, when unknown).
    fn holders(&self, object: ObjectId, f: &mut dyn FnMut(NodeId));

    /// Bytes of `reads` that `node` holds.
    fn bytes_on(&self, node: NodeId, reads: &[ObjectRead]) -> u64 {
        let mut total = 0u64;
        for r in reads {
            let mut held = false;
            self.holders(r.id, &mut |n| held |= n == node);
            if held {
                total = total.saturating_add(r.size);
            }
        }
        total
    }
}

/// Nobody holds anything: no task prefers a node (a head without an object directory).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLocality;

impl Locality for NoLocality {
    fn holders(&self, _: ObjectId, _: &mut dyn FnMut(NodeId)) {}
}

/// Holders in a plain map: for tests, and for a head that learns holdings from
/// announcements alone.
#[derive(Clone, Debug, Default)]
pub struct LocalityMap {
    holders: HashMap<ObjectId, Vec<NodeId>>,
}

impl LocalityMap {
    /// `node` holds a copy of `object`.
    pub fn add(&mut self, object: ObjectId, node: NodeId) {
        let nodes = self.holders.entry(object).or_default();
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }

    /// `object` is gone everywhere.
    pub fn remove(&mut self, object: ObjectId) {
        self.holders.remove(&object);
    }

    /// `node` is gone, and its copies with it. O(objects).
    pub fn remove_node(&mut self, node: NodeId) {
        self.holders.retain(|_, nodes| {
            nodes.retain(|n| *n != node);
            !nodes.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

impl Locality for LocalityMap {
    fn holders(&self, object: ObjectId, f: &mut dyn FnMut(NodeId)) {
        for n in self.holders.get(&object).into_iter().flatten() {
            f(*n);
        }
    }
}

/// The nodes `reads` should run on (see the module docs), among those `usable` accepts;
/// `None` for no preference.
pub(super) fn preferred_nodes(
    reads: &[ObjectRead],
    locality: &dyn Locality,
    min_bytes: u64,
    usable: impl Fn(NodeId) -> bool,
) -> Option<Box<[NodeId]>> {
    // Few holders per object and few objects per task: a vector beats a map here.
    let mut bytes: Vec<(NodeId, u64)> = Vec::new();
    for r in reads {
        locality.holders(
            r.id,
            &mut |n| match bytes.iter_mut().find(|(m, _)| *m == n) {
                Some((_, b)) => *b = b.saturating_add(r.size),
                None => bytes.push((n, r.size)),
            },
        );
    }
    bytes.retain(|(n, _)| usable(*n));
    let best = bytes.iter().map(|(_, b)| *b).max()?;
    if best == 0 || best < min_bytes {
        return None;
    }
    let floor = (best as f64 * NEAR_BEST) as u64;
    let mut nodes: Vec<NodeId> = bytes
        .into_iter()
        .filter(|(_, b)| *b >= floor)
        .map(|(n, _)| n)
        .collect();
    if nodes.len() > MAX_PREFERRED {
        return None;
    }
    nodes.sort_unstable();
    Some(nodes.into_boxed_slice())
}

impl Session {
    /// Whether it has tasks to send: in the common queue, or waiting for a node.
    pub fn queued(&self) -> bool {
        !self.pending.is_empty() || self.waiting > 0
    }

    /// The next task waiting for `node`, taken out of waiting. Entries of tasks taken
    /// elsewhere are dropped on the way.
    pub(super) fn pop_local(&mut self, node: NodeId) -> Option<TaskId> {
        if self.waiting == 0 {
            return None;
        }
        let queue = self.local.get_mut(&node)?;
        let mut found = None;
        while let Some(tid) = queue.pop_front() {
            let waits = self.tasks.get_mut(&tid).filter(|s| s.executor.is_none());
            if let Some(slot) =
                waits.filter(|s| s.waits.as_ref().is_some_and(|w| w.contains(&node)))
            {
                slot.waits = None;
                found = Some(tid);
                break;
            }
        }
        if queue.is_empty() {
            self.local.remove(&node);
        }
        let found = found?;
        self.stop_waiting();
        Some(found)
    }

    /// The oldest task waiting for any node, taken out of waiting (for an executor that
    /// waited long enough for one of its own).
    pub(super) fn pop_waiting(&mut self) -> Option<TaskId> {
        if self.waiting == 0 {
            return None;
        }
        while let Some(tid) = self.waiting_order.pop_front() {
            let slot = self.tasks.get_mut(&tid);
            if let Some(slot) = slot.filter(|s| s.executor.is_none() && s.waits.is_some()) {
                slot.waits = None;
                self.stop_waiting();
                return Some(tid);
            }
        }
        None
    }

    /// One task stopped waiting for a node (sent, or finished).
    pub(super) fn stop_waiting(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
        if self.waiting == 0 {
            // Whatever is left in the queues are entries of tasks taken elsewhere.
            self.local.clear();
            self.waiting_order.clear();
        }
    }

    /// Whether a task waits for `node` (stale entries at the front of its queue are
    /// dropped). O(1) amortized.
    pub(super) fn waits_for(&mut self, node: NodeId) -> bool {
        let Some(queue) = self.local.get_mut(&node) else {
            return false;
        };
        while let Some(tid) = queue.front() {
            let live = self.tasks.get(tid).is_some_and(|s| {
                s.executor.is_none() && s.waits.as_ref().is_some_and(|w| w.contains(&node))
            });
            if live {
                return true;
            }
            queue.pop_front();
        }
        self.local.remove(&node);
        false
    }
}

impl Scheduler {
    /// Queue a new task of `sid`: with the data-aware policy and a preference (see the
    /// module docs), into the queues of the nodes it prefers; else into the common queue.
    pub(super) fn queue_task(&mut self, sid: SessionId, tid: TaskId, locality: &dyn Locality) {
        let nodes = &self.nodes;
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let preferred = match session.tasks.get(&tid) {
            Some(slot) if self.config.policies.data_aware && !slot.reads.is_empty() => {
                preferred_nodes(&slot.reads, locality, self.config.data_min_bytes, |n| {
                    nodes.get(&n).is_some_and(|n| !n.draining)
                })
            }
            _ => None,
        };
        let Some(preferred) = preferred else {
            session.pending.push_back(tid);
            return;
        };
        for n in preferred.iter() {
            session.local.entry(*n).or_default().push_back(tid);
        }
        session.waiting_order.push_back(tid);
        session.waiting += 1;
        if let Some(slot) = session.tasks.get_mut(&tid) {
            slot.waits = Some(preferred);
        }
    }

    /// Record since when an executor has had nothing to do while its session's tasks wait
    /// for other nodes (`None`: it has work, or left its session) and keep the index in step.
    pub(super) fn set_passed_over(&mut self, eid: ExecutorId, since: Option<Instant>) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        if let Some(t) = exec.passed_over.take() {
            self.data_waits.remove(&(t, eid));
        }
        if let Some(t) = since {
            exec.passed_over = Some(t);
            self.data_waits.insert((t, eid));
        }
    }

    /// Executors passed over for `data_wait` may now take tasks waiting for other nodes:
    /// their sessions are fed. O(log E) per expiry.
    pub(super) fn expire_data_waits(&mut self, now: Instant) {
        while let Some(&(since, eid)) = self.data_waits.first() {
            if since
                .checked_add(self.config.data_wait)
                .is_none_or(|t| t > now)
            {
                break;
            }
            self.data_waits.remove(&(since, eid));
            let Some(exec) = self.executors.get_mut(&eid) else {
                continue;
            };
            exec.passed_over = None;
            exec.steals = true;
            if let Some(sid) = exec.session() {
                self.wake(sid);
            }
        }
    }
}
