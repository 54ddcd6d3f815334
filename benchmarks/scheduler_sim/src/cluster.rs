//! A simulated cluster around the real `flame_core::scheduler::Scheduler`: nodes that start
//! executors (after a start-up delay), executors that run their window of tasks one after
//! another for a virtual duration, sessions that submit tasks and close when all are done.
//! Time is virtual (an `Instant` advanced by hand), so a run is deterministic and nothing
//! sleeps; only the scheduler's own calls are timed, with the wall clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flame_core::ids::{ClientId, ExecutorId, NodeId, SessionId, TaskId};
use flame_core::model::{SessionSpec, TaskCounts};
use flame_core::scheduler::{Action, Policies, Scheduler, SchedulerConfig};

/// What a simulated executor process or node does next, at a virtual time (µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Registered(ExecutorId),
    Entered(ExecutorId, SessionId),
    TaskDone(ExecutorId),
    Left(ExecutorId, SessionId),
    Exited(NodeId, ExecutorId),
}

/// Wall-clock time spent inside the scheduler, and what it decided.
#[derive(Debug, Default, Clone)]
pub struct Costs {
    /// `schedule()` passes, and the placements (executor bound to a session) they made.
    pub schedule: Duration,
    pub placements: u64,
    /// `task_results()` calls, one per finished task.
    pub results: Duration,
    pub completions: u64,
    /// Every other event call (registered, entered, left, exited, open, submit, close).
    pub other: Duration,
    /// Virtual time the whole workload took.
    pub makespan: Duration,
}

impl Costs {
    pub fn ns_per_placement(&self) -> f64 {
        self.schedule.as_nanos() as f64 / self.placements.max(1) as f64
    }

    pub fn ns_per_completion(&self) -> f64 {
        self.results.as_nanos() as f64 / self.completions.max(1) as f64
    }

    pub fn total(&self) -> Duration {
        self.schedule + self.results + self.other
    }
}

/// The cluster's shape and workload.
#[derive(Debug, Clone)]
pub struct Shape {
    pub nodes: u32,
    pub slots_per_node: u32,
    pub sessions: u64,
    /// Each session submits 1..=this many tasks (varied by session id).
    pub max_tasks: u32,
    pub policies: Policies,
}

struct Exec {
    queue: VecDeque<(SessionId, TaskId)>,
    running: bool,
}

pub struct Sim {
    s: Scheduler,
    base: Instant,
    now_us: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    execs: HashMap<ExecutorId, Exec>,
    left: HashMap<SessionId, u32>,
    pub costs: Costs,
}

/// Virtual durations: start-up of an executor, bind/unbind, and the tasks (5–50 ms).
const START_US: u64 = 100_000;
const HOP_US: u64 = 500;

fn task_us(sid: SessionId, tid: TaskId) -> u64 {
    5_000 + (sid.0.wrapping_mul(7919) ^ tid.0.wrapping_mul(104_729)) % 45_000
}

impl Sim {
    pub fn new(shape: &Shape) -> Self {
        let config = SchedulerConfig {
            policies: shape.policies,
            ..SchedulerConfig::default()
        };
        let mut s = Scheduler::new(config);
        for n in 1..=shape.nodes {
            s.add_node(NodeId(u64::from(n)), format!("n{n}"), shape.slots_per_node);
        }
        Sim {
            s,
            base: Instant::now(),
            now_us: 0,
            events: BinaryHeap::new(),
            seq: 0,
            execs: HashMap::new(),
            left: HashMap::new(),
            costs: Costs::default(),
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    fn at(&mut self, delay_us: u64, ev: Event) {
        self.seq += 1;
        self.events
            .push(Reverse((self.now_us + delay_us, self.seq, ev)));
    }

    /// Open every session and submit its tasks (all at virtual time 0).
    pub fn open_all(&mut self, shape: &Shape) {
        let started = Instant::now();
        for id in 1..=shape.sessions {
            let sid = SessionId(id);
            let spec = SessionSpec {
                application: format!("app{}", id % 20),
                weight: (id % 3 + 1) as f64,
                priority: (id % 4) as i32,
                user: format!("u{}", id % 50),
                ..SessionSpec::default()
            };
            self.s.open_session(sid, spec, 0, TaskCounts::default());
            let n = 1 + (id % u64::from(shape.max_tasks)) as u32;
            let client = ClientId(u32::try_from(id).unwrap_or(u32::MAX));
            // Per-client counters start at 1: the scheduler takes 0 as already seen.
            let tasks: Vec<(TaskId, Bytes)> = (1..=n)
                .map(|i| (TaskId::compose(client, i), Bytes::new()))
                .collect();
            let accepted = self
                .s
                .accept(sid, tasks)
                .expect("a fresh session accepts tasks");
            assert_eq!(accepted.len(), n as usize, "every task is new");
            let queued = accepted.into_iter().map(|(t, b)| (t, b, 0)).collect();
            self.s.enqueue(sid, queued, None);
            self.left.insert(sid, n);
        }
        self.costs.other += started.elapsed();
    }

    /// Run until every task has finished (or `limit` of virtual time passes).
    pub fn run(&mut self, limit: Duration) {
        self.schedule();
        let limit_us = limit.as_micros() as u64;
        while !self.left.is_empty() && self.now_us <= limit_us {
            let deadline_us = self
                .s
                .next_deadline()
                .map(|d| d.saturating_duration_since(self.base).as_micros() as u64);
            let next_us = self.events.peek().map(|Reverse((t, _, _))| *t);
            let t = match (next_us, deadline_us) {
                (Some(e), Some(d)) => e.min(d.max(self.now_us)),
                (Some(e), None) => e,
                (None, Some(d)) => d.max(self.now_us),
                (None, None) => break,
            };
            self.now_us = t;
            while let Some(Reverse((at, _, _))) = self.events.peek() {
                if *at > t {
                    break;
                }
                let Reverse((_, _, ev)) = self.events.pop().expect("peeked");
                self.handle(ev);
            }
            self.schedule();
        }
        self.costs.makespan = Duration::from_micros(self.now_us);
    }

    pub fn unfinished_sessions(&self) -> usize {
        self.left.len()
    }

    fn schedule(&mut self) {
        let now = self.now();
        let t = Instant::now();
        self.s.schedule(now);
        self.costs.schedule += t.elapsed();
        self.apply();
    }

    fn handle(&mut self, ev: Event) {
        let now = self.now();
        let t = Instant::now();
        match ev {
            Event::Registered(e) => {
                self.s.executor_registered(e, now);
            }
            Event::Entered(e, sid) => self.s.session_entered(e, sid, None, now),
            Event::Left(e, sid) => self.s.session_left(e, sid, now),
            Event::Exited(n, e) => self.s.executor_exited(n, e, "killed", now),
            Event::TaskDone(e) => {
                let Some((sid, tid)) = self.execs.get_mut(&e).and_then(|x| x.queue.pop_front())
                else {
                    return;
                };
                self.s
                    .task_results(e, vec![(sid, tid, Ok(Bytes::new()))], now);
                self.costs.results += t.elapsed();
                self.costs.completions += 1;
                self.apply();
                self.start_next(e);
                return;
            }
        }
        self.costs.other += t.elapsed();
        self.apply();
    }

    fn start_next(&mut self, e: ExecutorId) {
        let Some(x) = self.execs.get_mut(&e) else {
            return;
        };
        x.running = false;
        if let Some(&(sid, tid)) = x.queue.front() {
            x.running = true;
            self.at(task_us(sid, tid), Event::TaskDone(e));
        }
    }

    /// Carry out the scheduler's actions as nodes and executors would.
    fn apply(&mut self) {
        for action in self.s.take_actions() {
            match action {
                Action::Spawn { executor, .. } => {
                    self.execs.insert(
                        executor,
                        Exec {
                            queue: VecDeque::new(),
                            running: false,
                        },
                    );
                    self.at(START_US, Event::Registered(executor));
                }
                Action::Kill { node, executor, .. } => {
                    self.execs.remove(&executor);
                    self.at(HOP_US, Event::Exited(node, executor));
                }
                Action::Bind { executor, session } => {
                    self.costs.placements += 1;
                    self.at(HOP_US, Event::Entered(executor, session));
                }
                Action::Unbind { executor, session } => {
                    self.at(HOP_US, Event::Left(executor, session));
                }
                Action::Dispatch {
                    executor,
                    session,
                    tasks,
                } => {
                    let Some(x) = self.execs.get_mut(&executor) else {
                        continue;
                    };
                    x.queue.extend(tasks.iter().map(|(t, _, _)| (session, *t)));
                    if !x.running {
                        self.start_next(executor);
                    }
                }
                Action::Finish(c) => {
                    let sid = c.key.session;
                    if let Some(n) = self.left.get_mut(&sid) {
                        *n -= 1;
                        if *n == 0 {
                            self.left.remove(&sid);
                            let t = Instant::now();
                            self.s.close_session(sid);
                            self.costs.other += t.elapsed();
                        }
                    }
                }
                Action::RecordAttempts { .. } => {}
            }
        }
    }
}
