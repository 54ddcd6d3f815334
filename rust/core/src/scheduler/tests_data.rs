//! Data-aware placement tests (`locality.rs`): a simulated cluster in virtual time, as in
//! `tests_policies.rs`, whose tasks read objects held on chosen nodes. Each test says where a
//! task's data is, when tasks finish, and reads where they ran.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::ids::{ClientId, ExecutorId, NodeId, ObjectId, SessionId, TaskId};
use crate::model::{SessionSpec, TaskCounts};

const MIB: u64 = 1 << 20;

struct DataSim {
    s: Scheduler,
    start: Instant,
    now: Instant,
    counter: u32,
    /// Tasks dispatched to each executor and not finished, in order.
    queues: HashMap<ExecutorId, VecDeque<(SessionId, TaskId)>>,
    node_of: HashMap<ExecutorId, NodeId>,
    /// Where each task was dispatched, and when (virtual time since the start).
    ran: HashMap<TaskId, (ExecutorId, NodeId, Duration)>,
    /// Tasks finished per session.
    done: HashMap<SessionId, usize>,
    spawns: Vec<NodeId>,
    locality: LocalityMap,
}

impl DataSim {
    fn new(policies: Policies, slots: &[u32], data_wait: Duration) -> Self {
        let mut s = Scheduler::new(SchedulerConfig {
            window: 1,
            window_max: 1,
            release_delay: Duration::from_secs(2),
            policies,
            data_wait,
            ..SchedulerConfig::default()
        });
        for (i, n) in slots.iter().enumerate() {
            s.add_node(NodeId(i as u64 + 1), format!("n{}", i + 1), *n);
        }
        let start = Instant::now();
        Self {
            s,
            start,
            now: start,
            counter: 0,
            queues: HashMap::new(),
            node_of: HashMap::new(),
            ran: HashMap::new(),
            done: HashMap::new(),
            spawns: Vec::new(),
            locality: LocalityMap::default(),
        }
    }

    fn open(&mut self, id: u64, f: impl FnOnce(&mut SessionSpec)) -> SessionId {
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

    /// An object of `mib` MiB held on `nodes`.
    fn object(&mut self, id: u64, mib: u64, nodes: &[u64]) -> ObjectRead {
        for n in nodes {
            self.locality.add(ObjectId(id), NodeId(*n));
        }
        ObjectRead {
            id: ObjectId(id),
            size: mib * MIB,
        }
    }

    /// Submit `n` tasks that each read `reads`.
    fn submit(&mut self, sid: SessionId, n: usize, reads: &[ObjectRead]) -> Vec<TaskId> {
        let mut tasks = Vec::with_capacity(n);
        let mut declared = Vec::new();
        for _ in 0..n {
            self.counter += 1;
            let tid = TaskId::compose(ClientId(1), self.counter);
            tasks.push((tid, Bytes::new(), 0));
            if !reads.is_empty() {
                declared.push((tid, TaskReads::from(reads)));
            }
        }
        let ids = tasks.iter().map(|t| t.0).collect();
        self.s
            .enqueue_reading(sid, tasks, declared, None, &self.locality);
        self.pump();
        ids
    }

    /// Schedule and carry out actions until the scheduler has nothing more to say.
    fn pump(&mut self) {
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
                        self.spawns.push(node);
                        assert!(self.s.executor_registered(executor, self.now));
                    }
                    Action::Bind { executor, session } => {
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
                        let node = self.node_of[&executor];
                        for t in &tasks {
                            let at = self.now - self.start;
                            self.ran.insert(t.0, (executor, node, at));
                        }
                        let q = self.queues.entry(executor).or_default();
                        q.extend(tasks.iter().map(|t| (session, t.0)));
                    }
                    Action::Kill { node, executor, .. } => {
                        self.queues.remove(&executor);
                        self.s.executor_exited(node, executor, "killed", self.now);
                    }
                    Action::Finish(c) => *self.done.entry(c.key.session).or_default() += 1,
                    Action::RecordAttempts { .. } => {}
                }
            }
        }
    }

    /// One task duration (100 ms): every executor finishes the task it is running.
    fn step(&mut self) {
        let mut execs: Vec<ExecutorId> = self.queues.keys().copied().collect();
        execs.sort_unstable();
        for e in execs {
            let Some((sid, tid)) = self.queues.get_mut(&e).and_then(|q| q.pop_front()) else {
                continue;
            };
            self.s
                .task_results(e, vec![(sid, tid, Ok(Bytes::new()))], self.now);
        }
        // What the results set off happens now, before time moves on.
        self.pump();
        self.now += Duration::from_millis(100);
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.pump();
    }

    fn held(&self, sid: SessionId) -> usize {
        self.s.session(sid).map_or(0, |s| s.executors.len())
    }

    fn done(&self, sid: SessionId) -> usize {
        self.done.get(&sid).copied().unwrap_or(0)
    }

    /// How many of `tasks` ran on `node`.
    fn ran_on(&self, tasks: &[TaskId], node: u64) -> usize {
        tasks
            .iter()
            .filter(|t| self.ran.get(t).is_some_and(|r| r.1 == NodeId(node)))
            .count()
    }
}

fn policies(names: &[&str]) -> Policies {
    Policies::from_names(names).unwrap()
}

#[test]
fn tasks_run_on_the_node_holding_their_data() {
    for data_aware in [true, false] {
        let names: &[&str] = if data_aware {
            &["fair_share", "data_aware"]
        } else {
            &["fair_share"]
        };
        let mut sim = DataSim::new(policies(names), &[2, 2], Duration::from_secs(10));
        let x = sim.object(7, 8, &[2]);
        let a = sim.open(1, |_| {});
        let ids = sim.submit(a, 20, &[x]);
        while sim.done(a) < 20 {
            sim.step();
        }
        if data_aware {
            assert_eq!(sim.ran_on(&ids, 2), 20, "every task ran where its data is");
            assert_eq!(
                &sim.spawns[..2],
                &[NodeId(2), NodeId(2)],
                "executors start where the data is first"
            );
        } else {
            assert!(sim.ran_on(&ids, 1) >= 8, "spread without the policy");
        }
    }
}

#[test]
fn the_nodes_holding_most_of_the_bytes_win() {
    let mut sim = DataSim::new(
        policies(&["data_aware"]),
        &[1, 1, 1],
        Duration::from_secs(10),
    );
    let big = sim.object(1, 64, &[3]);
    let small = sim.object(2, 2, &[1, 2]);
    let a = sim.open(1, |_| {});
    let ids = sim.submit(a, 4, &[big, small]);
    while sim.done(a) < 4 {
        sim.step();
    }
    assert_eq!(sim.ran_on(&ids, 3), 4);
}

#[test]
fn a_task_waits_at_most_data_wait_then_runs_anywhere() {
    let wait = Duration::from_millis(100);
    let mut sim = DataSim::new(policies(&["fair_share", "data_aware"]), &[1, 1], wait);
    // B runs a long task on node 1 (the first node with a free slot).
    let b = sim.open(1, |_| {});
    sim.submit(b, 1, &[]);
    assert_eq!(sim.spawns, vec![NodeId(1)]);
    // A's tasks read data on node 1, which B fills: A gets an executor on node 2.
    let x = sim.object(9, 8, &[1]);
    let a = sim.open(2, |_| {});
    let t0 = sim.now;
    let ids = sim.submit(a, 3, &[x]);
    assert_eq!(sim.spawns, vec![NodeId(1), NodeId(2)]);
    assert_eq!(sim.held(a), 1);
    assert_eq!(sim.ran_on(&ids, 2), 0, "A's tasks wait for node 1 first");
    assert_eq!(
        sim.s.next_deadline(),
        Some(t0 + wait),
        "the session manager wakes up when the wait ends"
    );
    sim.advance(wait - Duration::from_millis(1));
    assert_eq!(
        sim.ran_on(&ids, 2),
        0,
        "still waiting just before data_wait"
    );
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.ran_on(&ids, 2), 1, "then the oldest goes to node 2");
    assert_eq!(sim.ran[&ids[0]].2, t0 + wait - sim.start);
    // The next ones follow as soon as node 2 is free, without waiting again.
    sim.step();
    assert_eq!(sim.ran[&ids[1]].2, t0 + wait - sim.start);
    assert_eq!(sim.ran[&ids[1]].1, NodeId(2));
    sim.step();
    assert!(sim.ran.contains_key(&ids[2]));
    assert_eq!(sim.s.session(a).unwrap().waiting, 0);
    assert!(sim.s.data_waits.is_empty());
}

#[test]
fn a_deep_queue_stays_where_its_data_is() {
    // Two nodes, data split between them: each executor works through its own node's tasks
    // (no executor is idle, so nothing is taken across), however long the queue.
    let mut sim = DataSim::new(
        policies(&["fair_share", "data_aware"]),
        &[2, 2],
        Duration::from_millis(100),
    );
    let x = sim.object(1, 8, &[1]);
    let y = sim.object(2, 8, &[2]);
    let a = sim.open(1, |_| {});
    let on1 = sim.submit(a, 60, &[x]);
    let on2 = sim.submit(a, 60, &[y]);
    while sim.done(a) < 120 {
        sim.step();
    }
    assert_eq!((sim.ran_on(&on1, 1), sim.ran_on(&on2, 2)), (60, 60));
    // Uneven: node 2's executors run out first and, after data_wait, help with node 1's.
    let more = sim.submit(a, 40, &[x]);
    let few = sim.submit(a, 4, &[y]);
    let t = sim.now;
    while sim.done(a) < 164 {
        sim.step();
    }
    assert_eq!(sim.ran_on(&few, 2), 4);
    let helped = sim.ran_on(&more, 2);
    assert!(
        helped >= 10,
        "node 2 helped with {helped} of node 1's tasks"
    );
    assert!(
        sim.now - t <= Duration::from_millis(1500),
        "{:?}",
        sim.now - t
    );
}

#[test]
fn waiting_tasks_leave_no_trace_when_cancelled_or_closed() {
    let mut sim = DataSim::new(
        policies(&["fair_share", "data_aware"]),
        &[1, 1],
        Duration::from_millis(100),
    );
    let b = sim.open(1, |_| {});
    sim.submit(b, 1, &[]);
    let x = sim.object(9, 8, &[1]);
    let a = sim.open(2, |_| {});
    let ids = sim.submit(a, 3, &[x]);
    assert_eq!(sim.s.session(a).unwrap().waiting, 3);
    assert_eq!(sim.s.cancel(a, ids[0]), CancelOutcome::Cancelled);
    assert_eq!(sim.s.session(a).unwrap().waiting, 2);
    assert_eq!(sim.s.session(a).unwrap().counts.pending, 2);
    assert!(sim.s.close_session(a));
    sim.pump();
    assert!(sim.s.data_waits.is_empty(), "no deadline left behind");
    // B's task runs on; nothing wakes the session manager for A any more.
    assert_eq!(sim.s.next_deadline(), None);
}

#[test]
fn another_session_is_not_starved_and_shares_are_unchanged() {
    // A reads data on node 1; B reads nothing. The executors each holds, step by step, and
    // B's progress are the same as when A reads nothing either.
    let run = |reads: bool| {
        let mut sim = DataSim::new(
            policies(&["fair_share", "data_aware"]),
            &[2, 2],
            Duration::from_millis(100),
        );
        let x = sim.object(5, 8, &[1]);
        let a = sim.open(1, |_| {});
        let b = sim.open(2, |_| {});
        let a_reads = if reads { vec![x] } else { Vec::new() };
        sim.submit(a, 200, &a_reads);
        sim.step();
        sim.submit(b, 40, &[]);
        let mut trace = Vec::new();
        for _ in 0..30 {
            sim.step();
            trace.push((sim.held(a), sim.held(b), sim.done(b)));
        }
        (trace, sim.done(a))
    };
    let (with, a_done) = run(true);
    let (without, _) = run(false);
    assert_eq!(with, without);
    assert_eq!(with[3].0, 2, "A and B split the four slots");
    assert_eq!(with[3].1, 2);
    assert_eq!(with.last().unwrap().2, 40, "B finished");
    assert!(a_done > 30, "A was not starved either: {a_done}");
}

#[test]
fn with_the_policy_off_reads_change_nothing() {
    // Same workload with and without reads: the same executors start on the same nodes and
    // every task runs on the same executor at the same (virtual) time.
    let run = |names: &[&str], reads: bool| {
        let mut sim = DataSim::new(policies(names), &[2, 3], Duration::from_millis(100));
        let x = sim.object(3, 8, &[2]);
        let a = sim.open(1, |s| s.weight = 2.0);
        let b = sim.open(2, |_| {});
        let r = if reads { vec![x] } else { Vec::new() };
        sim.submit(a, 30, &r);
        sim.submit(b, 20, &r);
        for _ in 0..40 {
            sim.step();
        }
        assert_eq!(sim.done(a) + sim.done(b), 50);
        let mut ran: Vec<_> = sim.ran.into_iter().collect();
        ran.sort_unstable_by_key(|(t, _)| *t);
        (sim.spawns, ran)
    };
    let off = &["priority", "fair_share"];
    assert_eq!(run(off, true), run(off, false));
    // With the policy on, data nobody holds changes nothing either.
    let on = &["priority", "fair_share", "data_aware"];
    let unknown = |reads: bool| {
        let mut sim = DataSim::new(policies(on), &[2, 3], Duration::from_millis(100));
        let ghost = ObjectRead {
            id: ObjectId(99),
            size: 8 * MIB,
        };
        let a = sim.open(1, |_| {});
        let r = if reads { vec![ghost] } else { Vec::new() };
        sim.submit(a, 30, &r);
        for _ in 0..20 {
            sim.step();
        }
        let mut ran: Vec<_> = sim.ran.into_iter().collect();
        ran.sort_unstable_by_key(|(t, _)| *t);
        (sim.spawns, ran)
    };
    assert_eq!(unknown(true), unknown(false));
}

#[test]
fn an_executor_taken_back_for_a_waiting_session_is_one_near_its_data() {
    // A holds every slot; B opens with tasks reading data on node 2: fair share hands B one
    // of A's executors, and with the data-aware policy one on node 2.
    let mut sim = DataSim::new(
        policies(&["fair_share", "data_aware"]),
        &[2, 2],
        Duration::from_secs(10),
    );
    let a = sim.open(1, |_| {});
    sim.submit(a, 400, &[]);
    assert_eq!(sim.held(a), 4);
    let x = sim.object(4, 8, &[2]);
    let b = sim.open(2, |_| {});
    let ids = sim.submit(b, 10, &[x]);
    sim.step();
    assert_eq!((sim.held(a), sim.held(b)), (2, 2));
    for _ in 0..10 {
        sim.step();
    }
    assert_eq!(sim.done(b), 10);
    assert_eq!(sim.ran_on(&ids, 2), 10, "B's executors are on node 2");
}

#[test]
fn preferred_nodes_are_the_best_holders_when_few_and_worth_it() {
    let mut map = LocalityMap::default();
    let read = |id: u64, mib: u64| ObjectRead {
        id: ObjectId(id),
        size: mib * MIB,
    };
    map.add(ObjectId(1), NodeId(1));
    map.add(ObjectId(1), NodeId(2));
    map.add(ObjectId(2), NodeId(2));
    for n in 1..=6 {
        map.add(ObjectId(3), NodeId(n));
    }
    let all = |_: NodeId| true;
    let pref = |reads: &[ObjectRead], usable: &dyn Fn(NodeId) -> bool| {
        locality::preferred_nodes(reads, &map, MIB, usable).map(|n| n.to_vec())
    };
    // Node 2 holds both; a small extra object held elsewhere is a near tie.
    assert_eq!(
        pref(&[read(1, 10), read(2, 10)], &all),
        Some(vec![NodeId(2)])
    );
    assert_eq!(
        pref(&[read(1, 100), read(2, 1)], &all),
        Some(vec![NodeId(1), NodeId(2)])
    );
    // Too little to be worth waiting for, held nowhere, or held nearly everywhere.
    assert_eq!(
        pref(
            &[ObjectRead {
                id: ObjectId(1),
                size: 1000
            }],
            &all
        ),
        None
    );
    assert_eq!(pref(&[read(42, 10)], &all), None);
    assert_eq!(pref(&[read(3, 10)], &all), None);
    // A node the scheduler cannot use (gone, draining) is not waited for.
    assert_eq!(
        pref(&[read(1, 10), read(2, 10)], &|n| n != NodeId(2)),
        Some(vec![NodeId(1)])
    );
    assert_eq!(
        map.bytes_on(NodeId(2), &[read(1, 10), read(2, 5)]),
        15 * MIB
    );
    map.remove_node(NodeId(2));
    assert_eq!(map.bytes_on(NodeId(2), &[read(1, 10)]), 0);
}

/// Many tasks over many nodes: each reads one object on a pseudo-random node. Returns the
/// wall time per task (queue, place, dispatch, finish; with the sim's own work) and the
/// share of tasks that ran where their data is.
fn scale_run(nodes: usize, sessions: u64, tasks: usize, reads: bool) -> (f64, f64) {
    let mut sim = DataSim::new(
        policies(&["priority", "fair_share", "data_aware"]),
        &vec![8; nodes],
        Duration::from_millis(100),
    );
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let mut home: HashMap<TaskId, NodeId> = HashMap::new();
    for s in 1..=sessions {
        let sid = SessionId(s);
        sim.s
            .open_session(sid, SessionSpec::default(), 0, TaskCounts::default());
        for _ in 0..tasks / 100 {
            let mut batch = Vec::new();
            for _ in 0..100 {
                let node = next() % nodes as u64 + 1;
                let id = next() >> 1;
                let x = sim.object(id, 4, &[node]);
                batch.push((x, node));
            }
            // One submission per batch of 100, as a client sends them.
            let mut t = Vec::new();
            let mut declared = Vec::new();
            for (x, node) in batch {
                sim.counter += 1;
                let tid = TaskId::compose(ClientId(s as u32), sim.counter);
                t.push((tid, Bytes::new(), 0));
                home.insert(tid, NodeId(node));
                if reads {
                    declared.push((tid, TaskReads::from(&[x][..])));
                }
            }
            sim.s.enqueue_reading(sid, t, declared, None, &sim.locality);
        }
    }
    sim.pump();
    let total = sessions as usize * tasks;
    let mut steps = 0;
    while sim.done.values().sum::<usize>() < total {
        sim.step();
        steps += 1;
        assert!(steps < 100_000, "stuck");
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / total as f64;
    let local = home.iter().filter(|(t, n)| sim.ran[t].1 == **n).count();
    (per, local as f64 / total as f64)
}

#[test]
fn at_scale_tasks_finish_and_mostly_run_near_their_data() {
    let (_, local) = scale_run(20, 4, 1000, true);
    let (_, blind) = scale_run(20, 4, 1000, false);
    assert!(
        local > 0.8 && local > blind * 4.0,
        "local {local:.2} vs {blind:.2} without reads"
    );
}

#[test]
#[ignore = "timing; run in release"]
fn dispatch_cost_per_task_at_scale() {
    for (nodes, sessions, tasks) in [(100, 10, 10_000), (1000, 20, 10_000)] {
        let (with, local) = scale_run(nodes, sessions, tasks, true);
        let (without, blind) = scale_run(nodes, sessions, tasks, false);
        println!(
            "{nodes} nodes x 8 slots, {sessions} sessions x {tasks} tasks: {with:.2} us per \
             task reading an object ({:.0} % ran where it is), {without:.2} us reading none \
             ({:.0} %)",
            local * 100.0,
            blind * 100.0
        );
        assert!(with < without * 3.0 + 20.0, "{with} vs {without}");
    }
}
