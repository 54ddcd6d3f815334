//! Where executors come from when a session wants more, in order: with the data-aware policy
//! and tasks waiting for the nodes holding their data, an idle one on such a node, else a new
//! one there; then an idle one (data-aware:
//! last used by the same session, then the same service, then any of the same interpreter),
//! a new process (data-aware: on the session's last node, else the one with most free slots), an idle one of another interpreter
//! replaced, a warm one nobody is using, or one taken back from another session
//! (`reclaim.rs`). Also binding, becoming idle, and forgetting executors, with the indexes
//! these keep in step.

use std::cmp::Reverse;
use std::time::Instant;

use super::{Action, Executor, ExecutorState, Scheduler};

/// Nodes a session's waiting tasks wait for that one placement looks at, at most.
pub(super) const NEAR_DATA_SCAN: usize = 32;
use crate::ids::{ExecutorId, NodeId, SessionId};

impl Scheduler {
    /// Give executors to sessions that want them, one at a time in policy order (see
    /// `index.rs`), until nobody can get one. Each step is one placement.
    pub(super) fn acquire(&mut self, now: Instant) {
        // A session below its minimum that cannot get one (nothing free, nothing to take
        // back) does not stop the others: they may still take back by fair share.
        let mut skip_reserving = false;
        while let Some(sid) = self.index.next(skip_reserving) {
            let before = self.sessions[&sid].held();
            let reserving = before < self.sessions[&sid].reserved();
            let got = self.acquire_one(sid, now);
            self.reindex_dirty();
            // Every way of acquiring adds one to `held`; checking it keeps the loop finite
            // whatever an executor's state turned out to be.
            if !got || self.sessions.get(&sid).is_none_or(|s| s.held() <= before) {
                if reserving && !skip_reserving {
                    skip_reserving = true;
                    continue;
                }
                break;
            }
        }
    }

    /// Try to get one more executor for `sid`. Returns whether anything was done (the
    /// session then holds one more, on its way or bound).
    fn acquire_one(&mut self, sid: SessionId, now: Instant) -> bool {
        if self.acquire_near_data(sid, now) {
            return true;
        }
        if let Some(eid) = self.pick_idle(sid) {
            self.bind(eid, sid, now);
            return true;
        }
        let python = self.sessions[&sid].spec.python.clone();
        if let Some(node) = self.node_for_spawn(sid) {
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
        if let Some(eid) = self.warm_executor_of_another(sid) {
            self.unbind(eid, Some(sid));
            return true;
        }
        self.reclaim(sid)
    }

    /// With the data-aware policy, an executor for `sid` on a node its waiting tasks wait for:
    /// an idle one there, else a new one if a slot is free. The nodes take turns (a cursor
    /// per session), so a session's executors spread over the nodes holding its data instead
    /// of piling onto one; each call looks at [`NEAR_DATA_SCAN`] nodes at most, from the
    /// cursor on. `false` if none of them has room (the session then gets an executor
    /// wherever it can; see `locality.rs`). O(log K + NEAR_DATA_SCAN) for K nodes waited for.
    fn acquire_near_data(&mut self, sid: SessionId, now: Instant) -> bool {
        use std::ops::Bound::{Excluded, Unbounded};
        if !self.config.policies.data_aware {
            return false;
        }
        let Some(session) = self.sessions.get_mut(&sid).filter(|s| s.waiting > 0) else {
            return false;
        };
        let after = session.local_turn;
        let mut wanted: Vec<NodeId> = session
            .local
            .range((Excluded(after), Unbounded))
            .chain(session.local.range(..=after))
            .map(|(n, _)| *n)
            .take(NEAR_DATA_SCAN)
            .collect();
        wanted.retain(|n| session.waits_for(*n));
        let python = &session.spec.python;
        let idle = wanted.iter().find_map(|n| {
            let e = self
                .idle_by_node
                .get(n)?
                .iter()
                .copied()
                .find(|e| self.executors.get(e).is_some_and(|x| &x.python == python))?;
            Some((*n, e))
        });
        let free = || {
            wanted
                .iter()
                .copied()
                .find(|n| self.nodes.get(n).is_some_and(|x| x.has_free_slot()))
        };
        let (node, got) = match idle {
            Some((n, e)) => (n, Some(e)),
            None => match free() {
                Some(n) => (n, None),
                None => {
                    // The next call looks at the nodes after these.
                    if let Some(last) = wanted.last() {
                        session.local_turn = *last;
                    }
                    return false;
                }
            },
        };
        session.local_turn = node;
        match got {
            Some(eid) => self.bind(eid, sid, now),
            None => {
                let python = python.clone();
                self.spawn(node, python, sid);
            }
        }
        true
    }

    /// An idle executor for `sid`'s interpreter; with the data-aware policy, one that last
    /// served this session, else this service, if there is one. O(log I).
    fn pick_idle(&self, sid: SessionId) -> Option<ExecutorId> {
        let s = &self.sessions[&sid];
        let first = |set: Option<&std::collections::BTreeSet<ExecutorId>>| {
            set.and_then(|x| x.first().copied())
        };
        if self.config.policies.data_aware {
            if let Some(e) = first(self.idle_by_session.get(&sid)) {
                return Some(e);
            }
            if let Some(e) = first(self.idle_by_app.get(&s.app_key)) {
                return Some(e);
            }
        }
        first(self.idle_by_python.get(&s.spec.python))
    }

    /// Where to start a new executor for `sid`: with the data-aware policy, the node of the
    /// session's last executor while it has a free slot (its service is loaded there, its
    /// files cached); else the node with most free slots. O(log N).
    fn node_for_spawn(&self, sid: SessionId) -> Option<NodeId> {
        if self.config.policies.data_aware {
            let last = self.sessions[&sid].last_node;
            if let Some(n) = last.filter(|n| self.nodes.get(n).is_some_and(|n| n.has_free_slot())) {
                return Some(n);
            }
        }
        self.free_nodes.first().map(|&(_, n)| n)
    }

    /// A warm executor (bound, nothing to do) of another session, oldest first, that its
    /// session can spare (it stays at or above its minimum). Amortized O(log E).
    fn warm_executor_of_another(&mut self, sid: SessionId) -> Option<ExecutorId> {
        let candidates: Vec<(Instant, ExecutorId)> = self.warm.iter().copied().take(4).collect();
        for (t, eid) in candidates {
            let owner = self.executors.get(&eid).and_then(|e| match e.state {
                ExecutorState::Bound(o) => Some(o),
                _ => None,
            });
            let spare = match owner.and_then(|o| self.sessions.get(&o)) {
                Some(o) if o.id == sid => false,
                Some(o) => !o.queued() && o.kept() > o.reserved(),
                None => owner.is_some(),
            };
            if spare {
                return Some(eid);
            }
            if owner != Some(sid) {
                // Not warm in the sense that matters (its session needs it): out of the way.
                self.warm.remove(&(t, eid));
                if let Some(e) = self.executors.get_mut(&eid) {
                    e.idle_since = None;
                }
            }
        }
        None
    }

    pub(super) fn spawn(&mut self, node: NodeId, python: String, for_session: SessionId) {
        let eid = ExecutorId(self.next_executor);
        self.next_executor += 1;
        if let Some(n) = self.nodes.get_mut(&node) {
            n.executors.insert(eid);
        }
        self.node_changed(node);
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
                last_session: None,
                last_app: None,
                deadline: None,
                blocked: false,
                passed_over: None,
                steals: false,
            },
        );
        if let Some(s) = self.sessions.get_mut(&for_session) {
            s.starting += 1;
        }
        self.touch(for_session);
        self.actions.push(Action::Spawn {
            node,
            executor: eid,
            python,
        });
    }

    /// Keep the free-node index in step with a node's slots. O(log N).
    pub(super) fn node_changed(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(old) = n.free_key.take() {
            self.free_nodes.remove(&(Reverse(old), id));
            self.free_slots_total -= old;
        }
        let free = n.free_slots();
        if n.has_free_slot() {
            n.free_key = Some(free);
            self.free_nodes.insert((Reverse(free), id));
            self.free_slots_total += free;
        }
    }

    /// Bind an idle executor to `sid` and feed it.
    pub(super) fn bind(&mut self, eid: ExecutorId, sid: SessionId, now: Instant) {
        self.idle_remove(eid);
        let app = self.sessions.get(&sid).map(|s| s.app_key);
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        exec.state = ExecutorState::Binding(sid);
        exec.reserved_for = None;
        exec.releasing = false;
        exec.idle_since = None;
        exec.last_session = Some(sid);
        exec.last_app = app;
        exec.steals = false;
        let node = exec.node;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.executors.insert(eid);
            s.last_node = Some(node);
        }
        self.touch(sid);
        self.actions.push(Action::Bind {
            executor: eid,
            session: sid,
        });
        self.feed(sid, Some(eid), now);
    }

    /// An executor is registered and unbound: give it to the session it was reserved for if
    /// that session still wants one, else leave it idle.
    pub(super) fn became_idle(&mut self, eid: ExecutorId, now: Instant) {
        self.leaving.remove(&eid);
        self.set_idle_since(eid, None);
        self.set_head_since(eid, None);
        let Some(exec) = self.executors.get_mut(&eid) else {
            return;
        };
        exec.state = ExecutorState::Idle;
        exec.releasing = false;
        let reserved = exec.reserved_for.take();
        let node = exec.node;
        let draining = self.nodes.get(&node).is_some_and(|n| n.draining);
        if let Some(s) = reserved.and_then(|r| self.sessions.get_mut(&r)) {
            s.starting = s.starting.saturating_sub(1);
            let (sid, wants) = (s.id, s.held() < s.target());
            self.touch(sid);
            if wants && !draining {
                self.bind(eid, sid, now);
                return;
            }
        }
        if draining {
            self.retire(eid, "its node is draining");
            return;
        }
        if self.node_over_slots(node) {
            self.retire(eid, "its node is over its slots after a nested wait");
            return;
        }
        self.idle_add(eid);
    }

    fn idle_add(&mut self, eid: ExecutorId) {
        let Some(e) = self.executors.get(&eid) else {
            return;
        };
        self.idle.insert(eid);
        self.idle_by_node.entry(e.node).or_default().insert(eid);
        self.idle_by_python
            .entry(e.python.clone())
            .or_default()
            .insert(eid);
        if let Some(sid) = e.last_session {
            self.idle_by_session.entry(sid).or_default().insert(eid);
        }
        if let Some(app) = e.last_app {
            self.idle_by_app.entry(app).or_default().insert(eid);
        }
    }

    fn idle_remove(&mut self, eid: ExecutorId) {
        if !self.idle.remove(&eid) {
            return;
        }
        let Some(e) = self.executors.get(&eid) else {
            return;
        };
        fn drop_from<K: std::hash::Hash + Eq>(
            map: &mut std::collections::HashMap<K, std::collections::BTreeSet<ExecutorId>>,
            key: &K,
            eid: ExecutorId,
        ) {
            if let Some(set) = map.get_mut(key) {
                set.remove(&eid);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        drop_from(&mut self.idle_by_python, &e.python, eid);
        drop_from(&mut self.idle_by_node, &e.node, eid);
        if let Some(sid) = e.last_session {
            drop_from(&mut self.idle_by_session, &sid, eid);
        }
        if let Some(app) = e.last_app {
            drop_from(&mut self.idle_by_app, &app, eid);
        }
    }

    /// Drop every trace of an executor. `process_alive`: its process may still run (it was
    /// just disconnected or is being killed), so its slot stays taken until the node reports
    /// the exit.
    pub(super) fn forget_executor(
        &mut self,
        eid: ExecutorId,
        process_alive: bool,
    ) -> Option<Executor> {
        self.idle_remove(eid);
        self.leaving.remove(&eid);
        self.set_idle_since(eid, None);
        self.set_releasing(eid, false);
        self.set_blocked(eid, false);
        self.set_passed_over(eid, None);
        let exec = self.executors.remove(&eid)?;
        // `head_since` stays on the returned executor: `lose` tells from it whether the head
        // task had started.
        if let Some(d) = exec.deadline {
            self.deadlines.remove(&(d, eid));
        }
        if let Some(n) = self.nodes.get_mut(&exec.node) {
            n.executors.remove(&eid);
            if process_alive {
                n.exiting.insert(eid);
            }
        }
        self.node_changed(exec.node);
        if let Some(s) = exec.reserved_for.and_then(|r| self.sessions.get_mut(&r)) {
            s.starting = s.starting.saturating_sub(1);
            let sid = s.id;
            self.touch(sid);
        }
        if let Some(s) = exec.session().and_then(|sid| self.sessions.get_mut(&sid)) {
            s.executors.remove(&eid);
            let sid = s.id;
            self.touch(sid);
        }
        Some(exec)
    }
}
