//! Where executors come from when a session wants more: an idle one, a new process on a node
//! with a free slot, a warm one nobody is using, or — fair share — one reclaimed from a
//! session holding more than its share once its current tasks finish.

use std::cmp::Reverse;
use std::time::Instant;

use super::{Action, Executor, ExecutorState, Scheduler};
use crate::ids::{ExecutorId, NodeId, SessionId};

impl Scheduler {
    /// Hand out executors to `demanding` sessions one at a time, round-robin in order of
    /// priority (highest first) then fewest held, until nobody can get more.
    pub(super) fn acquire_for(&mut self, mut demanding: Vec<SessionId>, now: Instant) {
        while !demanding.is_empty() {
            demanding.sort_by_key(|sid| {
                let s = &self.sessions[sid];
                (Reverse(s.spec.priority), s.held(), *sid)
            });
            let mut progressed = false;
            let mut still = Vec::with_capacity(demanding.len());
            for sid in demanding {
                if self.acquire_one(sid, now) {
                    progressed = true;
                }
                if self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| !s.pending.is_empty() && s.held() < s.wanted())
                {
                    still.push(sid);
                }
            }
            if !progressed {
                break;
            }
            demanding = still;
        }
    }

    /// Try to get one more executor for `sid`. Returns whether anything was done.
    fn acquire_one(&mut self, sid: SessionId, now: Instant) -> bool {
        let python = self.sessions[&sid].spec.python.clone();
        if let Some(eid) = self
            .idle
            .iter()
            .copied()
            .find(|e| self.executors[e].python == python)
        {
            self.bind(eid, sid, now);
            return true;
        }
        if let Some(node) = self.node_with_most_free_slots() {
            self.spawn(node, python, sid);
            return true;
        }
        if let Some(eid) = self.idle.first().copied() {
            // Only idle executors of another interpreter are left: replace one.
            let node = self.executors[&eid].node;
            self.forget_executor(eid, true);
            self.actions.push(Action::Kill {
                node,
                executor: eid,
                reason: "replaced by an executor for another interpreter".into(),
            });
            self.spawn(node, python, sid);
            return true;
        }
        if let Some(eid) = self.warm_executor_of_idle_session(sid) {
            self.unbind(eid, Some(sid));
            return true;
        }
        self.reclaim_fair_share(sid)
    }

    fn node_with_most_free_slots(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.has_free_slot())
            .max_by_key(|n| (n.slots as usize - n.used_slots(), Reverse(n.id)))
            .map(|n| n.id)
    }

    fn spawn(&mut self, node: NodeId, python: String, for_session: SessionId) {
        let eid = ExecutorId(self.next_executor);
        self.next_executor += 1;
        if let Some(n) = self.nodes.get_mut(&node) {
            n.executors.insert(eid);
        }
        self.executors.insert(
            eid,
            Executor {
                id: eid,
                node,
                python: python.clone(),
                state: ExecutorState::Starting,
                inflight: Default::default(),
                idle_since: None,
                head_since: None,
                releasing: false,
                reserved_for: Some(for_session),
            },
        );
        if let Some(s) = self.sessions.get_mut(&for_session) {
            s.starting += 1;
        }
        self.actions.push(Action::Spawn {
            node,
            executor: eid,
            python,
        });
    }

    /// An executor bound to another session that has nothing queued and nothing running.
    fn warm_executor_of_idle_session(&self, sid: SessionId) -> Option<ExecutorId> {
        self.executors
            .values()
            .filter(|e| e.inflight.is_empty() && !e.releasing)
            .filter(|e| match e.state {
                ExecutorState::Bound(other) => {
                    other != sid
                        && self
                            .sessions
                            .get(&other)
                            .is_none_or(|o| o.pending.is_empty())
                }
                _ => false,
            })
            .map(|e| e.id)
            .min()
    }

    /// If `sid` holds less than its fair share, ask the session furthest above its share to
    /// give one executor back after its current tasks.
    fn reclaim_fair_share(&mut self, sid: SessionId) -> bool {
        let capacity: usize = self.nodes.values().map(|n| n.slots as usize).sum();
        let with_work = self
            .sessions
            .values()
            .filter(|s| s.wanted() > 0)
            .count()
            .max(1);
        let share = (capacity / with_work).max(1);
        if self.sessions[&sid].held() >= share {
            return false;
        }
        let kept = |s: &super::Session| {
            s.executors
                .iter()
                .filter(|e| self.executors.get(e).is_some_and(|x| !x.releasing))
                .count()
        };
        let victim = self
            .sessions
            .values()
            .filter(|s| s.id != sid && kept(s) > share)
            .max_by_key(|s| (kept(s), Reverse(s.spec.priority), s.id))
            .map(|s| s.id);
        let Some(victim) = victim else {
            return false;
        };
        let Some(eid) = self.sessions[&victim]
            .executors
            .iter()
            .copied()
            .filter(|e| self.executors.get(e).is_some_and(|x| !x.releasing))
            .min_by_key(|e| (self.executors[e].inflight.len(), *e))
        else {
            return false;
        };
        let exec = self
            .executors
            .get_mut(&eid)
            .expect("victim executor exists");
        if exec.inflight.is_empty() {
            self.unbind(eid, Some(sid));
        } else {
            exec.releasing = true;
            exec.reserved_for = Some(sid);
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.starting += 1;
            }
        }
        true
    }

    /// Bind an idle executor to `sid` and feed it.
    pub(super) fn bind(&mut self, eid: ExecutorId, sid: SessionId, now: Instant) {
        self.idle.remove(&eid);
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        exec.state = ExecutorState::Binding(sid);
        exec.reserved_for = None;
        exec.releasing = false;
        exec.idle_since = None;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.executors.insert(eid);
        }
        self.actions.push(Action::Bind {
            executor: eid,
            session: sid,
        });
        self.feed(sid, now);
    }

    /// An executor is registered and unbound: give it to the session it was reserved for if
    /// that session still wants one, else leave it idle.
    pub(super) fn became_idle(&mut self, eid: ExecutorId, now: Instant) {
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        exec.state = ExecutorState::Idle;
        exec.idle_since = None;
        exec.releasing = false;
        let reserved = exec.reserved_for.take();
        if let Some(s) = reserved.and_then(|r| self.sessions.get_mut(&r)) {
            s.starting = s.starting.saturating_sub(1);
            if s.held() < s.wanted() {
                let sid = s.id;
                self.bind(eid, sid, now);
                return;
            }
        }
        self.idle.insert(eid);
    }

    /// Drop every trace of an executor. `process_alive`: its process may still run (it was
    /// just disconnected or is being killed), so its slot stays taken until the node reports
    /// the exit.
    pub(super) fn forget_executor(
        &mut self,
        eid: ExecutorId,
        process_alive: bool,
    ) -> Option<Executor> {
        let exec = self.executors.remove(&eid)?;
        self.idle.remove(&eid);
        if let Some(n) = self.nodes.get_mut(&exec.node) {
            n.executors.remove(&eid);
            if process_alive {
                n.exiting.insert(eid);
            }
        }
        if let Some(s) = exec.reserved_for.and_then(|r| self.sessions.get_mut(&r)) {
            s.starting = s.starting.saturating_sub(1);
        }
        if let Some(s) = exec.session().and_then(|sid| self.sessions.get_mut(&sid)) {
            s.executors.remove(&eid);
        }
        Some(exec)
    }
}
