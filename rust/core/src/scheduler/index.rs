//! The ordered indexes that keep every scheduling decision O(log n): who gets the next free
//! executor (the queue), who gives one back (the holders), per tenant. A session's entries
//! are recomputed by [`Index::update`] whenever it changes (the scheduler marks it dirty),
//! so a decision reads the first element of a `BTreeSet` instead of scanning sessions.
//!
//! Ordering, the policies folded into the keys:
//! - queue: sessions below their `min_executors` first (priority, then age); then the tenant
//!   holding fewest executors; within it the highest priority, then the lowest held/weight,
//!   then the oldest session.
//! - holders (sessions holding more than their minimum): within a tenant, the lowest
//!   priority first, then the highest kept/weight. Tenants by executors held.
//!
//! With a policy off its part of the key is constant (priority 0, ratio 0, tenant 0).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, HashMap};

use super::{Policies, Session};
use crate::ids::SessionId;

/// An `f64` ordered by `total_cmp` (held/weight ratios are finite and non-negative).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Ratio(pub f64);

impl Eq for Ratio {}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

type QueueKey = (Reverse<i32>, Ratio, SessionId);
type HolderKey = (i32, Reverse<Ratio>, SessionId);

/// Where one session sits in the index, to remove it again in O(log n).
#[derive(Clone, Debug, Default)]
pub(crate) struct IndexSlot {
    reserving: Option<(Reverse<i32>, SessionId)>,
    queued: Option<QueueKey>,
    holding: Option<HolderKey>,
    /// Executors it contributed to its tenant's total.
    counted: usize,
}

#[derive(Debug, Default)]
struct Tenant {
    held: usize,
    queued: usize,
    holding: usize,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    reserving: BTreeSet<(Reverse<i32>, SessionId)>,
    /// Tenants with queued sessions, by executors held.
    queue_tenants: BTreeSet<(usize, u32)>,
    queue: HashMap<u32, BTreeSet<QueueKey>>,
    /// Tenants with holders, by executors held.
    holder_tenants: BTreeSet<(usize, u32)>,
    holders: HashMap<u32, BTreeSet<HolderKey>>,
    tenants: HashMap<u32, Tenant>,
}

/// One holder that may give an executor back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Holder {
    pub sid: SessionId,
    pub priority: i32,
}

impl Index {
    /// Take `s` out of every index. O(log S).
    pub fn remove(&mut self, s: &mut Session) {
        let t = s.tenant;
        self.detach(t);
        let slot = std::mem::take(&mut s.slot);
        let tenant = self.tenants.entry(t).or_default();
        if let Some(k) = slot.reserving {
            self.reserving.remove(&k);
        }
        if let Some(k) = slot.queued {
            tenant.queued -= 1;
            let set = self
                .queue
                .get_mut(&t)
                .expect("queued session's tenant has a queue");
            set.remove(&k);
            if set.is_empty() {
                self.queue.remove(&t);
            }
        }
        if let Some(k) = slot.holding {
            tenant.holding -= 1;
            let set = self.holders.get_mut(&t).expect("holder's tenant has a set");
            set.remove(&k);
            if set.is_empty() {
                self.holders.remove(&t);
            }
        }
        tenant.held -= slot.counted;
        self.attach(t);
    }

    /// Enter `s` as it is now (after [`Index::remove`]). O(log S).
    pub fn insert(&mut self, s: &mut Session, p: &Policies) {
        let t = s.tenant;
        self.detach(t);
        let prio = if p.priority { s.spec.priority } else { 0 };
        let held = s.held();
        let tenant = self.tenants.entry(t).or_default();
        tenant.held += held;
        s.slot.counted = held;
        if held < s.reserved() {
            let k = (Reverse(prio), s.id);
            self.reserving.insert(k);
            s.slot.reserving = Some(k);
        } else if s.hungry() {
            let ratio = if p.fair_share {
                held as f64 / s.spec.weight
            } else {
                0.0
            };
            let k = (Reverse(prio), Ratio(ratio), s.id);
            self.queue.entry(t).or_default().insert(k);
            tenant.queued += 1;
            s.slot.queued = Some(k);
        }
        if s.kept() > s.reserved() {
            let k = (prio, Reverse(Ratio(s.kept() as f64 / s.spec.weight)), s.id);
            self.holders.entry(t).or_default().insert(k);
            tenant.holding += 1;
            s.slot.holding = Some(k);
        }
        self.attach(t);
    }

    /// Take a tenant's entries out of the tenant orders before its counts change.
    fn detach(&mut self, t: u32) {
        if let Some(x) = self.tenants.get(&t) {
            self.queue_tenants.remove(&(x.held, t));
            self.holder_tenants.remove(&(x.held, t));
        }
    }

    fn attach(&mut self, t: u32) {
        let Some(x) = self.tenants.get(&t) else {
            return;
        };
        if x.queued > 0 {
            self.queue_tenants.insert((x.held, t));
        }
        if x.holding > 0 {
            self.holder_tenants.insert((x.held, t));
        }
        if x.queued == 0 && x.holding == 0 && x.held == 0 {
            self.tenants.remove(&t);
        }
    }

    /// The session that gets the next executor: a reservation first, then the tenant holding
    /// fewest, then that tenant's first session. O(log S).
    pub fn next(&self, skip_reserving: bool) -> Option<SessionId> {
        if !skip_reserving {
            if let Some((_, sid)) = self.reserving.first() {
                return Some(*sid);
            }
        }
        let (_, t) = self.queue_tenants.first()?;
        self.queue.get(t)?.first().map(|k| k.2)
    }

    /// Executors held by a tenant's sessions (on their way included).
    pub fn tenant_held(&self, t: u32) -> usize {
        self.tenants.get(&t).map_or(0, |x| x.held)
    }

    /// The tenant holding most, among those with sessions above their minimum.
    pub fn richest_tenant(&self) -> Option<u32> {
        self.holder_tenants.last().map(|(_, t)| *t)
    }

    /// The first holder of tenant `t` other than `not`: lowest priority, then the most
    /// executors per unit of weight. O(log S).
    pub fn first_holder(&self, t: u32, not: SessionId) -> Option<Holder> {
        self.holders
            .get(&t)?
            .iter()
            .find(|k| k.2 != not)
            .map(|k| Holder {
                sid: k.2,
                priority: k.0,
            })
    }
}
