//! Executors blocked in nested waits: a task that waits on other tasks of the cluster
//! (`flame.get` inside a task) gives up its slot while it waits, as Ray does for a blocked
//! worker, so that the tasks it waits for can be placed even when every slot is held by a
//! waiting parent (divide and conquer, agents calling tools).
//!
//! Semantics:
//! - Blocked: the executor stays bound and keeps its running task, but no longer counts
//!   against its node's slots ([`Node::used_slots`]) nor as held by its session
//!   ([`Session::held`]); the node may start one more executor in its place (the head tells
//!   the node how many it may run beyond its slots). Nothing is sent to it while blocked;
//!   the tasks it had been sent and not started come back (`tasks_returned`) and go to the
//!   front of their queue with their attempt refunded: they never ran.
//! - Unblocked: it holds its slot again at once — the task continues, it never waits for a
//!   slot. The node may then run over its slots for a while; until it is back within them
//!   nothing new is started or bound there (it is out of the free-node index), an idle
//!   executor there is stopped, a warm one unbound, and a busy one leaves (unbind, then
//!   stop) as soon as it runs out of work instead of staying warm. Executors already bound
//!   there keep being fed meanwhile.
//!
//! Cost: O(1) per block/unblock, O(window) per returned batch, O(E_node) to shed a node
//! that came back over its slots.

use std::time::Instant;

use super::{Action, ExecutorState, Scheduler};
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{key, TaskState};

impl Scheduler {
    /// Executor `eid`'s running task waits on other tasks: its slot is free meanwhile.
    /// Ignored unless it is bound and running something (a stale message after a kill).
    pub fn executor_blocked(&mut self, eid: ExecutorId, now: Instant) {
        let running = self
            .executors
            .get(&eid)
            .is_some_and(|e| e.session().is_some() && !e.inflight.is_empty());
        if running {
            self.set_blocked(eid, true);
        }
        let _ = now;
    }

    /// The wait of `eid`'s task is over: it holds its slot again (see the module docs).
    pub fn executor_unblocked(&mut self, eid: ExecutorId, now: Instant) {
        let Some(node) = self
            .executors
            .get(&eid)
            .filter(|e| e.blocked)
            .map(|e| e.node)
        else {
            return;
        };
        self.set_blocked(eid, false);
        self.shed(node, now);
    }

    /// Tasks of `sid` that `eid` was sent and gave back unrun (it was blocked): back to the
    /// front of their queue, in order, with their attempt refunded.
    pub fn tasks_returned(
        &mut self,
        eid: ExecutorId,
        sid: SessionId,
        tids: &[TaskId],
        now: Instant,
    ) {
        let (Some(exec), Some(session)) =
            (self.executors.get_mut(&eid), self.sessions.get_mut(&sid))
        else {
            return;
        };
        let mut back = Vec::new();
        let mut head_moved = false;
        for &tid in tids {
            let Some(pos) = exec.inflight.iter().position(|t| *t == tid) else {
                continue;
            };
            exec.inflight.remove(pos);
            head_moved |= pos == 0;
            // Finished meanwhile (cancelled) or owned elsewhere: nothing to put back.
            let Some(slot) = session
                .tasks
                .get_mut(&tid)
                .filter(|s| s.executor == Some(eid))
            else {
                continue;
            };
            slot.executor = None;
            slot.attempts = slot.attempts.saturating_sub(1);
            session.counts.remove(TaskState::Running, 1);
            session.counts.add(TaskState::Pending, 1);
            back.push((tid, slot.attempts));
        }
        for (tid, _) in back.iter().rev() {
            session.pending.push_front(*tid);
        }
        if head_moved {
            let next = (!exec.inflight.is_empty()).then_some(now);
            self.set_head_since(eid, next);
        }
        if back.is_empty() {
            return;
        }
        self.wake(sid);
        for (tid, attempts) in back {
            self.actions.push(Action::RecordAttempts {
                key: key(sid, tid),
                attempts,
            });
        }
    }

    /// Executors of `node` blocked in nested waits: how many it may run beyond its slots.
    pub fn blocked_on(&self, node: NodeId) -> usize {
        self.nodes.get(&node).map_or(0, |n| n.blocked.len())
    }

    /// Whether `node` has more executors holding slots than it has slots.
    pub(super) fn node_over_slots(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.over_slots())
    }

    /// Mark an executor blocked (or not) and keep its node's and session's counts in step.
    /// Called with `false` before an executor leaves its session or is forgotten.
    pub(super) fn set_blocked(&mut self, eid: ExecutorId, blocked: bool) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        if exec.blocked == blocked {
            return;
        }
        exec.blocked = blocked;
        let (node, sid) = (exec.node, exec.session());
        if let Some(n) = self.nodes.get_mut(&node) {
            if blocked {
                n.blocked.insert(eid);
            } else {
                n.blocked.remove(&eid);
            }
        }
        self.node_changed(node);
        if let Some(s) = sid.and_then(|sid| self.sessions.get_mut(&sid)) {
            if blocked {
                s.blocked += 1;
            } else {
                s.blocked = s.blocked.saturating_sub(1);
            }
            let sid = s.id;
            self.touch(sid);
        }
    }

    /// Bring a node that runs over its slots back towards them: stop its idle executors and
    /// unbind its warm ones (they are stopped once they have left), as many as it is over.
    /// Busy ones leave when they run out of work (`settle`, `became_idle`).
    fn shed(&mut self, node: NodeId, now: Instant) {
        let Some(n) = self.nodes.get(&node) else {
            return;
        };
        let leaving = n
            .executors
            .iter()
            .filter(|e| {
                self.executors
                    .get(e)
                    .is_some_and(|x| matches!(x.state, ExecutorState::Unbinding(_)))
            })
            .count();
        let mut excess = n
            .used_slots()
            .saturating_sub(n.slots as usize)
            .saturating_sub(leaving);
        let mut ids: Vec<ExecutorId> = n.executors.iter().copied().collect();
        ids.sort_unstable();
        for eid in ids {
            if excess == 0 {
                break;
            }
            let Some(e) = self.executors.get(&eid) else {
                continue;
            };
            if e.state == ExecutorState::Idle {
                self.retire(eid, "its node is over its slots after a nested wait");
                excess -= 1;
            } else if e.session().is_some() && e.inflight.is_empty() && !e.blocked {
                self.unbind(eid, None);
                excess -= 1;
            }
        }
        let _ = now;
    }
}
