//! Policy tests: a simulated cluster driven in virtual time. Every action is carried out at
//! once as a node and executors would (spawned executors register, binds and unbinds are
//! acknowledged, kills exit), so a test only says when tasks finish and reads who holds what.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::ids::{ClientId, ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{SessionSpec, TaskCounts};

pub(super) struct Sim {
    s: Scheduler,
    now: Instant,
    counter: u32,
    /// Tasks dispatched to each executor and not finished, in order.
    queues: HashMap<ExecutorId, VecDeque<(SessionId, TaskId)>>,
    node_of: HashMap<ExecutorId, NodeId>,
    kills: usize,
    pub binds: usize,
    /// (task, attempts) of every RecordAttempts.
    recorded: Vec<(TaskId, u32)>,
    finished: usize,
}

impl Sim {
    pub(super) fn new(policies: Policies, slots: &[u32]) -> Self {
        let mut s = Scheduler::new(SchedulerConfig {
            window: 1,
            window_max: 1,
            release_delay: Duration::from_secs(2),
            first_executor_id: 1,
            policies,
            ..SchedulerConfig::default()
        });
        for (i, n) in slots.iter().enumerate() {
            s.add_node(NodeId(i as u64 + 1), format!("n{i}"), *n);
        }
        Self {
            s,
            now: Instant::now(),
            counter: 0,
            queues: HashMap::new(),
            node_of: HashMap::new(),
            kills: 0,
            binds: 0,
            recorded: Vec::new(),
            finished: 0,
        }
    }

    pub(super) fn open(&mut self, id: u64, f: impl FnOnce(&mut SessionSpec)) -> SessionId {
        let mut spec = SessionSpec {
            application: "app".into(),
            ..Default::default()
        };
        f(&mut spec);
        self.s
            .open_session(SessionId(id), spec, 0, TaskCounts::default());
        self.pump();
        SessionId(id)
    }

    pub(super) fn submit(&mut self, sid: SessionId, n: usize) {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                self.counter += 1;
                (TaskId::compose(ClientId(1), self.counter), Bytes::new(), 0)
            })
            .collect();
        self.s.enqueue(sid, tasks, None);
        self.pump();
    }

    /// Schedule and carry out actions until the scheduler has nothing more to say.
    pub(super) fn pump(&mut self) {
        loop {
            self.s.schedule(self.now);
            let actions = self.s.take_actions();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                match a {
                    Action::Spawn { node, executor, .. } => {
                        self.node_of.insert(executor, node);
                        assert!(self.s.executor_registered(executor, self.now));
                    }
                    Action::Bind { executor, session } => {
                        self.binds += 1;
                        self.s.session_entered(executor, session, None, self.now)
                    }
                    Action::Unbind { executor, session } => {
                        self.queues.remove(&executor);
                        self.s.session_left(executor, session, self.now);
                    }
                    Action::Dispatch {
                        executor,
                        session,
                        tasks,
                    } => {
                        let q = self.queues.entry(executor).or_default();
                        q.extend(tasks.iter().map(|t| (session, t.0)));
                    }
                    Action::Kill { node, executor, .. } => {
                        self.kills += 1;
                        self.queues.remove(&executor);
                        self.s.executor_exited(node, executor, "killed", self.now);
                    }
                    Action::Finish(_) => self.finished += 1,
                    Action::RecordAttempts { key, attempts } => {
                        self.recorded.push((key.task, attempts))
                    }
                }
            }
        }
    }

    /// One task duration: every executor finishes the task it is running.
    pub(super) fn step(&mut self) {
        let mut execs: Vec<ExecutorId> = self.queues.keys().copied().collect();
        execs.sort_unstable();
        for e in execs {
            let Some((sid, tid)) = self.queues.get_mut(&e).and_then(|q| q.pop_front()) else {
                continue;
            };
            self.s
                .task_results(e, vec![(sid, tid, Ok(Bytes::new()))], self.now);
        }
        self.now += Duration::from_millis(100);
        self.pump();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.pump();
    }

    /// Executors bound to the session.
    pub(super) fn held(&self, sid: SessionId) -> usize {
        self.s.session(sid).map_or(0, |s| s.executors.len())
    }
}

pub(super) fn policies(names: &[&str]) -> Policies {
    Policies::from_names(names).unwrap()
}

#[test]
fn equal_priorities_split_executors_by_weight() {
    let mut sim = Sim::new(Policies::default(), &[6]);
    let a = sim.open(1, |s| s.weight = 2.0);
    let b = sim.open(2, |s| s.weight = 1.0);
    sim.submit(a, 200);
    sim.submit(b, 200);
    for _ in 0..3 {
        sim.step();
    }
    assert_eq!((sim.held(a), sim.held(b)), (4, 2));
    // A third session of weight 3 joins: 6 slots split 2:1:3 as tasks finish.
    let c = sim.open(3, |s| s.weight = 3.0);
    sim.submit(c, 200);
    for _ in 0..3 {
        sim.step();
    }
    assert_eq!((sim.held(a), sim.held(b), sim.held(c)), (2, 1, 3));
    assert_eq!(sim.kills, 0, "fair share never kills");
}

#[test]
fn a_newcomer_gets_its_share_within_one_task_duration_without_kills() {
    let mut sim = Sim::new(Policies::default(), &[4, 4]);
    let a = sim.open(1, |_| {});
    sim.submit(a, 2000);
    assert_eq!(sim.held(a), 8);
    let b = sim.open(2, |_| {});
    sim.submit(b, 50);
    assert_eq!(
        sim.held(b),
        0,
        "nothing is free: B waits for tasks of A to finish"
    );
    sim.step();
    assert_eq!((sim.held(a), sim.held(b)), (4, 4));
    assert_eq!(sim.kills, 0);
    // Without fair share B waits for A's queue.
    let mut fifo = Sim::new(policies(&["priority"]), &[4, 4]);
    let a = fifo.open(1, |_| {});
    fifo.submit(a, 2000);
    let b = fifo.open(2, |_| {});
    fifo.submit(b, 50);
    fifo.step();
    assert_eq!((fifo.held(a), fifo.held(b)), (8, 0));
}

#[test]
fn higher_priority_is_served_first_and_lower_gets_executors_back() {
    let mut sim = Sim::new(Policies::default(), &[3]);
    let low = sim.open(1, |_| {});
    sim.submit(low, 100);
    let high = sim.open(2, |s| s.priority = 5);
    sim.submit(high, 6);
    sim.step();
    assert_eq!(
        (sim.held(low), sim.held(high)),
        (0, 3),
        "all of them, not a share"
    );
    sim.step();
    sim.step();
    // high's 6 tasks are done; its warm executors go back to low, which is waiting.
    assert_eq!(sim.s.session(high).unwrap().counts.succeeded, 6);
    assert_eq!(sim.held(low), 3);
    assert_eq!(sim.kills, 0, "no preemption by default");
    // With priority off, the two share equally instead.
    let mut flat = Sim::new(policies(&["fair_share"]), &[4]);
    let low = flat.open(1, |_| {});
    flat.submit(low, 100);
    let high = flat.open(2, |s| s.priority = 5);
    flat.submit(high, 100);
    flat.step();
    assert_eq!((flat.held(low), flat.held(high)), (2, 2));
}

#[test]
fn preemption_kills_lower_priority_tasks_and_requeues_them_without_charging() {
    let mut sim = Sim::new(policies(&["priority", "fair_share", "preemption"]), &[2]);
    let low = sim.open(1, |s| s.max_retries = 0);
    sim.submit(low, 10);
    assert_eq!(sim.held(low), 2);
    let high = sim.open(2, |s| s.priority = 1);
    sim.submit(high, 4);
    // No task duration passes: the running tasks of `low` are killed at once.
    assert_eq!(sim.kills, 2);
    assert_eq!((sim.held(low), sim.held(high)), (0, 2));
    // Their attempts were refunded (0), so with max_retries = 0 they still run later.
    assert_eq!(sim.recorded.len(), 2);
    assert!(sim.recorded.iter().all(|(_, attempts)| *attempts == 0));
    for _ in 0..10 {
        sim.step();
    }
    let low_s = sim.s.session(low).unwrap();
    assert_eq!((low_s.counts.succeeded, low_s.counts.failed), (10, 0));
    // Equal priorities never preempt one another.
    let mut eq = Sim::new(policies(&["priority", "fair_share", "preemption"]), &[2]);
    let a = eq.open(1, |_| {});
    eq.submit(a, 10);
    let b = eq.open(2, |_| {});
    eq.submit(b, 10);
    assert_eq!(eq.kills, 0);
}

#[test]
fn min_executors_are_reserved_at_open_and_kept_while_idle() {
    let mut sim = Sim::new(Policies::default(), &[4]);
    let s = sim.open(1, |s| s.min_executors = 2);
    assert_eq!(sim.held(s), 2, "reserved before any task");
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.held(s), 2, "kept past the release delay");
    let other = sim.open(2, |_| {});
    sim.submit(other, 100);
    sim.step();
    assert_eq!(
        sim.held(other),
        2,
        "fair share does not reclaim below a minimum"
    );
    assert_eq!(sim.held(s), 2);
    // Work beyond the minimum: the extra executors are released after the delay, the
    // minimum stays.
    sim.s.close_session(other);
    sim.pump();
    sim.submit(s, 40);
    sim.step();
    assert_eq!(sim.held(s), 4);
    for _ in 0..12 {
        sim.step();
    }
    assert_eq!(sim.s.session(s).unwrap().counts.succeeded, 40);
    sim.advance(Duration::from_secs(3));
    assert_eq!(sim.held(s), 2);
}

#[test]
fn a_minimum_takes_executors_back_when_nothing_is_free() {
    let mut sim = Sim::new(Policies::default(), &[2]);
    let busy = sim.open(1, |_| {});
    sim.submit(busy, 100);
    let r = sim.open(2, |s| s.min_executors = 1);
    assert_eq!(sim.held(r), 0);
    sim.step();
    assert_eq!((sim.held(busy), sim.held(r)), (1, 1));
    // Minimums above what exists get what there is, in priority order.
    let mut sim = Sim::new(Policies::default(), &[3]);
    let a = sim.open(1, |s| s.min_executors = 2);
    let b = sim.open(2, |s| {
        s.min_executors = 2;
        s.priority = 1
    });
    assert_eq!((sim.held(a), sim.held(b)), (2, 1));
    assert_eq!(sim.kills, 0);
}

#[test]
fn max_executors_caps_a_session() {
    let mut sim = Sim::new(Policies::default(), &[8]);
    let s = sim.open(1, |s| s.slots = 3);
    sim.submit(s, 100);
    sim.step();
    assert_eq!(sim.held(s), 3);
    assert_eq!(sim.s.nodes().next().unwrap().used_slots(), 3);
}

#[test]
fn the_release_delay_keeps_idle_executors_bound_until_it_runs_out() {
    let mut sim = Sim::new(Policies::default(), &[2]);
    let s = sim.open(1, |_| {});
    sim.submit(s, 2);
    sim.step();
    assert_eq!(sim.held(s), 2);
    sim.advance(Duration::from_millis(1800));
    assert_eq!(sim.held(s), 2, "still warm");
    // A burst within the delay reuses the warm executors: no new spawn, no bind.
    let before = sim.s.executor(ExecutorId(1)).map(|e| e.state);
    sim.submit(s, 2);
    assert_eq!(sim.s.executor(ExecutorId(1)).map(|e| e.state), before);
    sim.step(); // they finish, then 100 ms pass
    sim.advance(Duration::from_millis(1899));
    assert_eq!(sim.held(s), 2);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.held(s), 0, "released when the delay ran out");
    assert!(sim.s.next_deadline().is_none());
}

#[test]
fn tenants_split_first_then_their_sessions() {
    let mut sim = Sim::new(
        policies(&["priority", "fair_share", "tenant_fair_share"]),
        &[6],
    );
    let ana1 = sim.open(1, |s| s.user = "ana".into());
    sim.submit(ana1, 200);
    let ana2 = sim.open(2, |s| s.user = "ana".into());
    sim.submit(ana2, 200);
    let bob = sim.open(3, |s| s.user = "bob".into());
    sim.submit(bob, 200);
    for _ in 0..4 {
        sim.step();
    }
    assert_eq!(sim.held(bob), 3, "bob's one session gets his tenant's half");
    assert_eq!(sim.held(ana1) + sim.held(ana2), 3);
    assert!(sim.held(ana1).abs_diff(sim.held(ana2)) <= 1);
    // Without the tenant level, three sessions share equally.
    let mut flat = Sim::new(Policies::default(), &[6]);
    for id in 1..=3 {
        let sid = flat.open(id, |s| s.user = if id < 3 { "ana" } else { "bob" }.into());
        flat.submit(sid, 200);
    }
    for _ in 0..4 {
        flat.step();
    }
    assert_eq!(flat.held(SessionId(3)), 2);
}

#[test]
fn idle_executors_are_matched_to_their_last_session_then_service() {
    for data_aware in [true, false] {
        let names: &[&str] = if data_aware {
            &["fair_share", "data_aware"]
        } else {
            &["fair_share"]
        };
        let mut sim = Sim::new(policies(names), &[2]);
        let y = sim.open(1, |s| s.application = "y".into());
        sim.submit(y, 1);
        let x = sim.open(2, |s| s.application = "x".into());
        sim.submit(x, 1);
        let ey = *sim.s.session(y).unwrap().executors.iter().next().unwrap();
        let ex = *sim.s.session(x).unwrap().executors.iter().next().unwrap();
        assert!(ey < ex);
        sim.step();
        sim.advance(Duration::from_secs(3));
        assert_eq!((sim.held(x), sim.held(y)), (0, 0), "both idle now");
        // x has work again: with data-aware placement it gets its own executor back.
        sim.submit(x, 1);
        let got = *sim.s.session(x).unwrap().executors.iter().next().unwrap();
        assert_eq!(got, if data_aware { ex } else { ey });
        sim.step();
        sim.s.close_session(x);
        sim.s.close_session(y);
        sim.pump();
        // A new session of the same service prefers the executor that ran it.
        let x2 = sim.open(3, |s| s.application = "x".into());
        sim.submit(x2, 1);
        let got = *sim.s.session(x2).unwrap().executors.iter().next().unwrap();
        assert_eq!(got, if data_aware { ex } else { ey });
    }
}

#[test]
fn new_executors_start_on_the_node_the_session_already_uses() {
    for data_aware in [true, false] {
        let names: &[&str] = if data_aware {
            &["fair_share", "data_aware"]
        } else {
            &["fair_share"]
        };
        let mut sim = Sim::new(policies(names), &[3, 3]);
        let x = sim.open(1, |_| {});
        sim.submit(x, 1);
        let first = sim.node_of[&ExecutorId(1)];
        sim.submit(x, 1);
        let second = sim.node_of[&ExecutorId(2)];
        if data_aware {
            assert_eq!(second, first, "packed next to its first executor");
        } else {
            assert_ne!(second, first, "spread to the node with most free slots");
        }
    }
}
