//! Where tasks go while executors come and go, in virtual time: a task never waits behind a
//! running one on a busy executor while a slot is idle or an executor is on its way (long
//! tasks then take ⌈n / slots⌉ rounds), yet a session that cannot grow still sends tasks
//! ahead and short tasks still widen the window.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::tests::{dispatched, Harness};
use super::*;
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};

fn spawned(actions: &[Action]) -> Vec<ExecutorId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { executor, .. } => Some(*executor),
            _ => None,
        })
        .collect()
}

/// Run `n` tasks of `each` on a fresh cluster of `slots` where the k-th executor registers
/// `stagger * k` after the submission. Returns when the last task finished and how many
/// tasks each executor ran.
fn makespan(slots: u32, n: usize, each: Duration, stagger: Duration) -> (Duration, Vec<usize>) {
    let mut h = Harness::new(slots);
    let start = h.now;
    let sid = h.open(1, 0, 0);
    h.submit(sid, n);
    let mut to_register: VecDeque<(std::time::Instant, ExecutorId)> = VecDeque::new();
    // Tasks each executor was sent, and when its head task started.
    let mut queues: HashMap<ExecutorId, VecDeque<TaskId>> = HashMap::new();
    let mut head_since: HashMap<ExecutorId, std::time::Instant> = HashMap::new();
    let mut ran: HashMap<ExecutorId, usize> = HashMap::new();
    let mut done = 0;
    let handle = |h: &mut Harness,
                  to_register: &mut VecDeque<(std::time::Instant, ExecutorId)>,
                  queues: &mut HashMap<ExecutorId, VecDeque<TaskId>>,
                  head_since: &mut HashMap<ExecutorId, std::time::Instant>| {
        let actions = h.actions();
        for e in spawned(&actions) {
            let at = h.now + stagger * (to_register.len() as u32 + queues.len() as u32);
            to_register.push_back((at, e));
        }
        for a in &actions {
            match a {
                Action::Bind { executor, .. } => h.s.session_entered(*executor, sid, None, h.now),
                Action::Dispatch { executor, .. } => {
                    let q = queues.entry(*executor).or_default();
                    if q.is_empty() {
                        head_since.insert(*executor, h.now);
                    }
                    q.extend(dispatched(std::slice::from_ref(a), *executor));
                }
                _ => {}
            }
        }
    };
    handle(&mut h, &mut to_register, &mut queues, &mut head_since);
    while done < n {
        // The next event: an executor registering or a head task finishing.
        let finish = queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(e, _)| (head_since[e] + each, *e))
            .min();
        let register = to_register.front().copied();
        match (finish, register) {
            (Some((t, e)), r) if r.is_none_or(|(rt, _)| t <= rt) => {
                h.now = t;
                let tid = queues.get_mut(&e).unwrap().pop_front().unwrap();
                *ran.entry(e).or_default() += 1;
                done += 1;
                if !queues[&e].is_empty() {
                    head_since.insert(e, h.now);
                }
                h.complete(e, sid, &[tid]);
            }
            (_, Some((t, e))) => {
                h.now = h.now.max(t);
                to_register.pop_front();
                assert!(h.s.executor_registered(e, h.now));
                h.s.schedule(h.now);
                queues.entry(e).or_default();
            }
            _ => panic!("stuck with {done} of {n} tasks done"),
        }
        handle(&mut h, &mut to_register, &mut queues, &mut head_since);
    }
    let mut per_executor: Vec<usize> = ran.into_values().collect();
    per_executor.sort_unstable();
    (h.now - start, per_executor)
}

#[test]
fn long_tasks_take_one_round_per_slot_while_executors_start_one_by_one() {
    let each = Duration::from_secs(5);
    let stagger = Duration::from_millis(300);
    for slots in [2u32, 4] {
        for n in [2usize, 4, 8] {
            let (took, per_executor) = makespan(slots, n, each, stagger);
            let rounds = n.div_ceil(slots as usize) as u32;
            // The last executor registers `stagger * (slots - 1)` late at most.
            let bound = each * rounds + stagger * (slots - 1);
            assert!(
                took <= bound,
                "{n} tasks of {each:?} on {slots} slots took {took:?} (at most {bound:?}); \
                 tasks per executor {per_executor:?}"
            );
            assert_eq!(
                per_executor.len(),
                (slots as usize).min(n),
                "{per_executor:?}"
            );
        }
    }
}

#[test]
fn the_first_executor_up_takes_one_task_when_another_is_on_its_way() {
    let mut h = Harness::new(2);
    let sid = h.open(1, 0, 0);
    let tids = h.submit(sid, 2);
    let execs = spawned(&h.actions());
    assert_eq!(execs.len(), 2);
    assert!(h.s.executor_registered(execs[0], h.now));
    h.s.schedule(h.now);
    assert_eq!(dispatched(&h.actions(), execs[0]), vec![tids[0]]);
    assert!(h.s.executor_registered(execs[1], h.now));
    h.s.schedule(h.now);
    assert_eq!(dispatched(&h.actions(), execs[1]), vec![tids[1]]);
}

#[test]
fn a_new_task_goes_to_a_free_slot_not_behind_a_running_one() {
    let mut h = Harness::new(2);
    let sid = h.open(1, 0, 0);
    let first = h.submit(sid, 1);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    assert_eq!(dispatched(&h.actions(), e), first);
    // The session's one executor is busy and a slot is free: start another, send nothing
    // ahead to the busy one.
    let second = h.submit(sid, 1);
    let a = h.actions();
    assert!(dispatched(&a, e).is_empty(), "{a:?}");
    let e2 = h.register_spawned(&a)[0];
    assert_eq!(dispatched(&h.actions(), e2), second);
}

#[test]
fn an_empty_executor_is_fed_before_a_busy_one() {
    let mut h = Harness::new(2);
    let sid = h.open(1, 0, 0);
    h.submit(sid, 3);
    let a = h.actions();
    let execs = h.register_spawned(&a);
    let a = h.actions();
    let (lo, hi) = (execs[0], execs[1]);
    let (lo_tasks, hi_tasks) = (dispatched(&a, lo), dispatched(&a, hi));
    assert_eq!((lo_tasks.len(), hi_tasks.len()), (2, 1), "{a:?}");
    // `lo` finishes one task and still runs the other; `hi` is done.
    h.complete(lo, sid, &lo_tasks[..1]);
    h.complete(hi, sid, &hi_tasks);
    h.actions();
    // One new task: to the empty executor, not behind the running one (which sorts first
    // by id and has room in its window).
    let more = h.submit(sid, 1);
    let a = h.actions();
    assert_eq!(dispatched(&a, hi), more, "{a:?}");
    assert!(dispatched(&a, lo).is_empty(), "{a:?}");
}

#[test]
fn a_session_that_cannot_grow_still_sends_tasks_ahead() {
    // One slot: nothing else can come, so the window is filled as before.
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 0);
    h.submit(sid, 5);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    assert_eq!(dispatched(&h.actions(), e).len(), 2, "window 2");
    // A session capped at one executor on a bigger cluster: the same.
    let mut h = Harness::new(4);
    let sid = h.open(1, 1, 0);
    h.submit(sid, 5);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    assert_eq!(dispatched(&h.actions(), e).len(), 2, "window 2");
}

#[test]
fn short_tasks_still_widen_the_window_on_a_cluster_with_room() {
    let mut h = Harness::with_config(
        4,
        SchedulerConfig {
            window: 2,
            window_max: 32,
            window_work: Duration::from_millis(2),
            ..SchedulerConfig::default()
        },
    );
    let sid: SessionId = h.open(1, 0, 0);
    h.submit(sid, 2_000);
    let a = h.actions();
    let execs = h.register_spawned(&a);
    assert_eq!(execs.len(), 4);
    let mut inflight: HashMap<ExecutorId, VecDeque<TaskId>> = HashMap::new();
    for e in &execs {
        inflight.insert(*e, dispatched(&h.actions(), *e).into());
    }
    let a = h.actions();
    for e in &execs {
        inflight.get_mut(e).unwrap().extend(dispatched(&a, *e));
    }
    let mut widest = 0;
    for _ in 0..200 {
        for e in &execs {
            let Some(t) = inflight.get_mut(e).unwrap().pop_front() else {
                continue;
            };
            h.now += Duration::from_micros(50);
            h.complete(*e, sid, &[t]);
            let more = dispatched(&h.actions(), *e);
            let q = inflight.get_mut(e).unwrap();
            q.extend(more);
            widest = widest.max(q.len());
        }
    }
    assert!(widest >= 16, "50 µs tasks keep a wide window: {widest}");
}

#[test]
fn closing_a_session_kills_the_executors_running_its_tasks_and_records_true_times() {
    let mut h = Harness::new(2);
    let sid = h.open(1, 0, 0);
    h.submit(sid, 4);
    let a = h.actions();
    let execs = h.register_spawned(&a);
    let a = h.actions();
    let started = h.now;
    // Each executor runs one task and has one sent ahead behind it.
    let sent: Vec<Vec<TaskId>> = execs.iter().map(|e| dispatched(&a, *e)).collect();
    assert!(sent.iter().all(|s| s.len() == 2), "{a:?}");
    for e in &execs {
        h.s.session_entered(*e, sid, None, h.now);
    }
    h.now += Duration::from_secs(2);

    assert!(h.s.close_session(sid));
    let a = h.actions();
    let mut kills: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Kill { executor, .. } => Some(*executor),
            _ => None,
        })
        .collect();
    kills.sort_unstable();
    assert_eq!(kills, execs, "both run a task of it: {a:?}");
    assert!(
        !a.iter().any(|x| matches!(x, Action::Unbind { .. })),
        "a killed executor is not unbound: {a:?}"
    );
    let done: HashMap<TaskId, &Completion> = a
        .iter()
        .filter_map(|x| match x {
            Action::Finish(c) => Some((c.key.task, c)),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 4);
    for (e, tasks) in execs.iter().zip(&sent) {
        // The running one started when it was sent, on its executor; the one behind it
        // never started anywhere and used no attempt.
        let (running, behind) = (done[&tasks[0]], done[&tasks[1]]);
        assert_eq!(running.state, crate::model::TaskState::Cancelled);
        assert_eq!((running.started, running.attempts), (Some(started), 1));
        assert_eq!(running.ran_on.map(|(x, _)| x), Some(*e));
        assert_eq!(behind.state, crate::model::TaskState::Cancelled);
        assert_eq!(
            (behind.started, behind.ran_on, behind.attempts),
            (None, None, 0)
        );
    }
    // Their slots stay taken until the node reports the exits; nothing is bound meanwhile.
    assert!(execs.iter().all(|e| h.s.executor(*e).is_none()));
    h.s.schedule(h.now);
    assert!(h.actions().is_empty());
}

#[test]
fn closing_a_session_unbinds_executors_with_nothing_to_do() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 0);
    let t = h.submit(sid, 1);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.actions();
    h.s.session_entered(e, sid, None, h.now);
    h.complete(e, sid, &t);
    h.actions();
    assert!(h.s.close_session(sid));
    let a = h.actions();
    assert_eq!(
        a,
        vec![Action::Unbind {
            executor: e,
            session: sid
        }]
    );
}

#[test]
fn a_silent_executor_is_killed_and_its_tasks_run_elsewhere_with_the_running_one_charged() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 2);
    let tids = h.submit(sid, 2);
    let a = h.actions();
    let frozen = h.register_spawned(&a)[0];
    assert_eq!(
        dispatched(&h.actions(), frozen),
        tids,
        "one running, one sent ahead"
    );
    h.s.session_entered(frozen, sid, None, h.now);
    h.now += Duration::from_secs(5);

    h.s.executor_unresponsive(frozen, "silent for 5 s", h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Kill { executor, .. } if *executor == frozen)),
        "{a:?}"
    );
    let attempts: HashMap<TaskId, u32> = a
        .iter()
        .filter_map(|x| match x {
            Action::RecordAttempts { key, attempts } => Some((key.task, *attempts)),
            _ => None,
        })
        .collect();
    assert_eq!(attempts[&tids[0]], 1, "the running task's attempt counts");
    assert_eq!(attempts[&tids[1]], 0, "the one behind it never started");
    assert!(
        !a.iter().any(|x| matches!(x, Action::Spawn { .. })),
        "its process holds the slot until the node reports the exit: {a:?}"
    );
    // Later news from it changes nothing; once it has exited both tasks run on a new one.
    h.s.task_results(frozen, vec![(sid, tids[0], Ok(Bytes::new()))], h.now);
    h.s.executor_exited(NodeId(1), frozen, "killed by signal 9", h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    let fresh = h.register_spawned(&a)[0];
    let a = h.actions();
    assert_eq!(dispatched(&a, fresh), tids);
    let sent: Vec<u32> = a
        .iter()
        .filter_map(|x| match x {
            Action::Dispatch { tasks, .. } => Some(tasks.iter().map(|t| t.2)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(sent, vec![2, 1]);
}

#[test]
fn tasks_wait_for_an_executor_that_is_leaving_another_session() {
    let mut h = Harness::new(2);
    let first = h.open(1, 0, 0);
    h.submit(first, 2);
    let a = h.actions();
    let execs = h.register_spawned(&a);
    let a = h.actions();
    for e in &execs {
        h.s.session_entered(*e, first, None, h.now);
        let sent = dispatched(&a, *e);
        h.complete(*e, first, &sent);
    }
    h.actions();
    assert!(h.s.close_session(first));
    h.actions();
    // One executor has left the closed session, the other has not said so yet.
    h.s.session_left(execs[0], first, h.now);
    let second = h.open(2, 0, 0);
    let tids = h.submit(second, 2);
    let a = h.actions();
    assert_eq!(dispatched(&a, execs[0]), vec![tids[0]], "{a:?}");
    h.s.session_left(execs[1], first, h.now);
    h.s.schedule(h.now);
    assert_eq!(dispatched(&h.actions(), execs[1]), vec![tids[1]]);
}
