//! Taking executors back: when nothing is free, a session that wants one may take it from
//! another session — by priority, by fair share, per tenant, or to reach its minimum. The
//! victim's executor is released once its current tasks finish (nothing is killed), unless
//! preemption is on and the victim has strictly lower priority: then its running task is
//! killed and goes back to the queue without being charged an attempt.
//!
//! Fair share is progressive filling: a session takes one from the session furthest over its
//! weighted share only if that still leaves the victim at or above the taker, i.e.
//! `(kept_v - 1) / w_v >= (held_s + 1) / w_s`; that converges on shares proportional to the
//! weights without ever computing a global share. The tenant level applies the same test
//! to tenants (equal weights) first.

use super::{Action, Scheduler};
use crate::ids::{ExecutorId, SessionId};
use crate::model::{key, TaskState};

impl Scheduler {
    /// Ask one executor back for `sid` from the session the policies pick, if any. O(log S)
    /// to pick the victim, O(E_victim) to pick its executor.
    pub(super) fn reclaim(&mut self, sid: SessionId) -> bool {
        let Some((victim, preempt)) = self.pick_victim(sid) else {
            return false;
        };
        let Some(eid) = self.executor_to_release(victim, sid) else {
            return false;
        };
        let busy = !self.executors[&eid].inflight.is_empty();
        if !busy {
            self.unbind(eid, Some(sid));
        } else if preempt {
            self.preempt(eid, sid);
        } else {
            self.set_releasing(eid, true);
            if let Some(e) = self.executors.get_mut(&eid) {
                e.reserved_for = Some(sid);
            }
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.starting += 1;
            }
            self.touch(sid);
        }
        true
    }

    /// The session that gives an executor to `sid`, and whether its running task may be
    /// killed for it.
    fn pick_victim(&self, sid: SessionId) -> Option<(SessionId, bool)> {
        let p = &self.config.policies;
        let s = &self.sessions[&sid];
        let prio = if p.priority { s.spec.priority } else { 0 };
        let held = s.held();
        let reserving = held < s.reserved();
        let mut tenant = s.tenant;
        if p.tenant_fair_share || reserving {
            // A tenant holding at least two more than ours gives one back (equal tenant
            // shares); a reservation takes from whoever holds most.
            if let Some(rich) = self.index.richest_tenant() {
                let gap = self.index.tenant_held(rich) >= self.index.tenant_held(tenant) + 2;
                if rich != tenant && (reserving || gap) {
                    let v = self.index.first_holder(rich, sid)?;
                    return Some((v.sid, p.preemption && v.priority < prio));
                }
                if reserving {
                    tenant = rich;
                }
            }
        }
        let v = self.index.first_holder(tenant, sid)?;
        if reserving {
            return Some((v.sid, p.preemption && v.priority < prio));
        }
        if p.priority && v.priority < prio {
            return Some((v.sid, p.preemption));
        }
        if v.priority == prio && p.fair_share {
            let o = &self.sessions[&v.sid];
            let (wv, ws) = (o.spec.weight, s.spec.weight);
            if (o.kept() as f64 - 1.0) / wv >= (held as f64 + 1.0) / ws {
                return Some((v.sid, false));
            }
        }
        None
    }

    /// Which of the victim's executors to take for `taker`: an idle one, else the one with
    /// least queued; among those, one on a node the taker's tasks wait for (data-aware).
    fn executor_to_release(&self, victim: SessionId, taker: SessionId) -> Option<ExecutorId> {
        let wanted = self.sessions.get(&taker).map(|s| &s.local);
        self.sessions
            .get(&victim)?
            .executors
            .iter()
            .copied()
            .filter_map(|e| self.executors.get(&e))
            .filter(|e| !e.releasing && !e.blocked)
            .min_by_key(|e| {
                let far = !wanted.is_some_and(|w| w.contains_key(&e.node));
                (e.inflight.len(), far, e.id)
            })
            .map(|e| e.id)
    }

    /// Kill `eid` for `sid`: every task it holds goes back to the front of its queue with
    /// its attempt refunded (preemption is not the task's fault), and `sid` is owed the slot
    /// the process frees (see `executor_exited`).
    fn preempt(&mut self, eid: ExecutorId, sid: SessionId) {
        let Some(exec) = self.forget_executor(eid, true) else {
            return;
        };
        if let Some(victim) = exec.session().and_then(|v| self.sessions.get_mut(&v)) {
            let vid = victim.id;
            let mut refunded = Vec::new();
            for tid in exec.inflight.iter().rev().copied() {
                let Some(slot) = victim.tasks.get_mut(&tid) else {
                    continue;
                };
                if slot.executor != Some(eid) {
                    continue;
                }
                slot.executor = None;
                slot.attempts = slot.attempts.saturating_sub(1);
                victim.counts.remove(TaskState::Running, 1);
                victim.counts.add(TaskState::Pending, 1);
                victim.pending.push_front(tid);
                refunded.push((tid, slot.attempts));
            }
            self.wake(vid);
            for (tid, attempts) in refunded.into_iter().rev() {
                self.actions.push(Action::RecordAttempts {
                    key: key(vid, tid),
                    attempts,
                });
            }
        }
        self.preempted.insert(eid, sid);
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.starting += 1;
        }
        self.touch(sid);
        self.actions.push(Action::Kill {
            node: exec.node,
            executor: eid,
            reason: format!("preempted for higher-priority session {sid}"),
        });
    }

    /// The process of an executor killed by preemption exited (or its node is gone): the
    /// session it was killed for stops counting it as on its way.
    pub(super) fn preempted_exit(&mut self, eid: ExecutorId) {
        if let Some(sid) = self.preempted.remove(&eid) {
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.starting = s.starting.saturating_sub(1);
            }
            self.touch(sid);
        }
    }
}
