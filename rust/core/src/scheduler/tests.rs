//! Scheduler unit tests: no I/O, virtual time (an `Instant` advanced by hand).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::ids::{ClientId, ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{ErrorKind, SessionSpec, TaskCounts, TaskFailure, TaskState};

pub(super) struct Harness {
    pub(super) s: Scheduler,
    pub(super) now: Instant,
    counter: u32,
}

impl Harness {
    pub(super) fn new(slots: u32) -> Self {
        Self::with_config(
            slots,
            SchedulerConfig {
                window: 2,
                window_max: 2,
                release_delay: Duration::from_secs(2),
                first_executor_id: 1,
                policies: Policies::default(),
                ..SchedulerConfig::default()
            },
        )
    }

    pub(super) fn with_config(slots: u32, config: SchedulerConfig) -> Self {
        let mut s = Scheduler::new(config);
        s.add_node(NodeId(1), "n1".into(), slots);
        Self {
            s,
            now: Instant::now(),
            counter: 0,
        }
    }

    pub(super) fn open(&mut self, id: u64, slots: u32, max_retries: u32) -> SessionId {
        let spec = SessionSpec {
            application: "app".into(),
            slots,
            max_retries,
            ..Default::default()
        };
        self.s
            .open_session(SessionId(id), spec, 0, TaskCounts::default());
        SessionId(id)
    }

    pub(super) fn submit(&mut self, sid: SessionId, n: usize) -> Vec<TaskId> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                self.counter += 1;
                (
                    TaskId::compose(ClientId(1), self.counter),
                    Bytes::from_static(b"x"),
                )
            })
            .collect();
        let accepted = self.s.accept(sid, tasks).unwrap();
        let ids = accepted.iter().map(|(t, _)| *t).collect();
        self.s.enqueue(
            sid,
            accepted.into_iter().map(|(t, i)| (t, i, 0)).collect(),
            Some(7),
        );
        self.s.schedule(self.now);
        ids
    }

    pub(super) fn actions(&mut self) -> Vec<Action> {
        self.s.take_actions()
    }

    /// Register every executor that was spawned, as the processes would.
    pub(super) fn register_spawned(&mut self, actions: &[Action]) -> Vec<ExecutorId> {
        let ids: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { executor, .. } => Some(*executor),
                _ => None,
            })
            .collect();
        for e in &ids {
            assert!(self.s.executor_registered(*e, self.now));
        }
        self.s.schedule(self.now);
        ids
    }

    pub(super) fn complete(&mut self, e: ExecutorId, sid: SessionId, tasks: &[TaskId]) {
        let results = tasks
            .iter()
            .map(|t| (sid, *t, Ok(Bytes::from_static(b"ok"))))
            .collect();
        self.s.task_results(e, results, self.now);
        self.s.schedule(self.now);
    }
}

pub(super) fn dispatched(actions: &[Action], to: ExecutorId) -> Vec<TaskId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch {
                executor, tasks, ..
            } if *executor == to => Some(tasks.iter().map(|t| t.0).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn finished(actions: &[Action]) -> Vec<(TaskId, TaskState)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Finish(c) => Some((c.key.task, c.state)),
            _ => None,
        })
        .collect()
}

#[test]
fn tasks_spawn_bind_run_and_warm_executors_are_released_after_the_delay() {
    let mut h = Harness::new(2);
    let sid = h.open(1, 0, 3);
    let tids = h.submit(sid, 3);
    let a = h.actions();
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .count(),
        2
    );
    let execs = h.register_spawned(&a);
    let a = h.actions();
    assert!(matches!(a[0], Action::Bind { .. }));
    let first = dispatched(&a, execs[0]);
    let second = dispatched(&a, execs[1]);
    assert_eq!(
        first.len() + second.len(),
        3,
        "window 2 per executor spreads 3 tasks"
    );
    h.s.session_entered(execs[0], sid, None, h.now);
    h.s.session_entered(execs[1], sid, None, h.now);
    h.complete(execs[0], sid, &first);
    h.complete(execs[1], sid, &second);
    let done = finished(&h.actions());
    assert_eq!(done.len(), 3);
    assert!(done
        .iter()
        .all(|(t, s)| tids.contains(t) && *s == TaskState::Succeeded));
    assert_eq!(h.s.session(sid).unwrap().counts.succeeded, 3);
    // Still warm before the delay, released after it.
    h.now += Duration::from_secs(1);
    h.s.schedule(h.now);
    assert!(h.actions().is_empty());
    assert_eq!(h.s.next_deadline(), Some(h.now + Duration::from_secs(1)));
    h.now += Duration::from_secs(1);
    h.s.schedule(h.now);
    let unbinds = h
        .actions()
        .iter()
        .filter(|a| matches!(a, Action::Unbind { .. }))
        .count();
    assert_eq!(unbinds, 2);
}

#[test]
fn a_waiting_session_takes_a_warm_executor_at_once() {
    let mut h = Harness::new(1);
    let a_sid = h.open(1, 0, 3);
    let t = h.submit(a_sid, 1);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.s.session_entered(e, a_sid, None, h.now);
    h.complete(e, a_sid, &t);
    h.actions();
    let b_sid = h.open(2, 0, 3);
    h.submit(b_sid, 1);
    let a = h.actions();
    assert!(
        a.contains(&Action::Unbind {
            executor: e,
            session: a_sid
        }),
        "{a:?}"
    );
    h.s.session_left(e, a_sid, h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(
        a.contains(&Action::Bind {
            executor: e,
            session: b_sid
        }),
        "{a:?}"
    );
    assert_eq!(dispatched(&a, e).len(), 1);
}

#[test]
fn fair_share_reclaims_executors_as_their_tasks_finish() {
    let mut h = Harness::new(2);
    let a_sid = h.open(1, 0, 3);
    h.submit(a_sid, 20);
    let a = h.actions();
    let execs = h.register_spawned(&a);
    let a = h.actions();
    for e in &execs {
        h.s.session_entered(*e, a_sid, None, h.now);
    }
    let b_sid = h.open(2, 0, 3);
    h.submit(b_sid, 5);
    assert!(
        h.actions()
            .iter()
            .all(|a| !matches!(a, Action::Unbind { .. })),
        "no killing"
    );
    // The executor with the fewest tasks in flight is the one given back; finish its window.
    let victim = execs
        .iter()
        .copied()
        .find(|e| h.s.executor(*e).unwrap().releasing)
        .expect("one executor is releasing");
    let its_tasks = dispatched(&a, victim);
    h.complete(victim, a_sid, &its_tasks);
    let a = h.actions();
    assert!(
        a.contains(&Action::Unbind {
            executor: victim,
            session: a_sid
        }),
        "{a:?}"
    );
    h.s.session_left(victim, a_sid, h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(
        a.contains(&Action::Bind {
            executor: victim,
            session: b_sid
        }),
        "{a:?}"
    );
    assert_eq!(
        h.s.session(a_sid).unwrap().executors.len(),
        1,
        "A keeps running on the other"
    );
}

#[test]
fn lost_executor_requeues_then_fails_after_max_retries() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 1);
    let t = h.submit(sid, 1)[0];
    let a = h.actions();
    let e1 = h.register_spawned(&a)[0];
    h.actions();
    h.s.executor_exited(NodeId(1), e1, "killed", h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::RecordAttempts { attempts: 1, .. })));
    h.now += Duration::from_secs(3);
    let e2 = h.register_spawned(&a)[0];
    let a = h.actions();
    assert_eq!(dispatched(&a, e2), vec![t]);
    let second_attempt = h.now;
    h.now += Duration::from_secs(1);
    h.s.executor_exited(NodeId(1), e2, "killed again", h.now);
    let a = h.actions();
    match &a[..] {
        [Action::Finish(c)] => {
            assert_eq!(c.state, TaskState::Failed);
            let err = c.error.as_ref().unwrap();
            assert_eq!(err.kind, ErrorKind::ErrorExecutorLost);
            assert!(err.message.contains("2 attempt"), "{}", err.message);
            assert_eq!(c.watcher, Some(7));
            // Timings and placement are those of the last attempt, kept after its loss.
            assert_eq!(c.started, Some(second_attempt));
            assert_eq!(c.ran_on, Some((e2, NodeId(1))));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failed_session_enter_fails_every_task_and_later_ones() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 3);
    h.submit(sid, 3);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.actions();
    let f = TaskFailure::new(ErrorKind::ErrorUserException, "boom in __init__");
    h.s.session_entered(e, sid, Some(f), h.now);
    let done = finished(&h.actions());
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|(_, s)| *s == TaskState::Failed));
    h.submit(sid, 1);
    let a = h.actions();
    assert_eq!(
        finished(&a).len(),
        1,
        "new tasks fail at once, no rebinding: {a:?}"
    );
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::Bind { .. } | Action::Spawn { .. })));
}

#[test]
fn resubmitted_ids_are_ignored() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 3);
    let t1 = TaskId::compose(ClientId(3), 1);
    let t2 = TaskId::compose(ClientId(3), 2);
    let x = Bytes::from_static(b"x");
    let got =
        h.s.accept(sid, vec![(t1, x.clone()), (t2, x.clone())])
            .unwrap();
    assert_eq!(got.len(), 2);
    let again =
        h.s.accept(sid, vec![(t2, x.clone()), (t1, x.clone())])
            .unwrap();
    assert!(again.is_empty());
    assert!(h.s.accept(SessionId(99), vec![]).is_err());
}

#[test]
fn cancel_pending_and_running_tasks() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 1, 3);
    let tids = h.submit(sid, 3);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.actions();
    // Window 2: tids[0], tids[1] running; tids[2] pending.
    assert_eq!(h.s.cancel(sid, tids[2]), CancelOutcome::Cancelled);
    assert_eq!(h.s.cancel(sid, tids[0]), CancelOutcome::Killed);
    let a = h.actions();
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Kill { executor, .. } if *executor == e)));
    assert_eq!(finished(&a).len(), 2);
    assert_eq!(h.s.cancel(sid, tids[0]), CancelOutcome::NotFound);
    // The killed executor's other task runs again elsewhere.
    h.s.executor_lost(e, "killed for cancel", h.now);
    h.s.schedule(h.now);
    assert!(
        !h.actions()
            .iter()
            .any(|a| matches!(a, Action::Spawn { .. })),
        "its process still holds the slot until the node reports the exit"
    );
    h.s.executor_exited(NodeId(1), e, "killed for cancel", h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    let e2 = h.register_spawned(&a)[0];
    let a = h.actions();
    assert_eq!(dispatched(&a, e2), vec![tids[1]]);
    let attempt = a.iter().find_map(|x| match x {
        Action::Dispatch { tasks, .. } => Some(tasks[0].2),
        _ => None,
    });
    assert_eq!(attempt, Some(1), "it never started on the killed executor");
}

#[test]
fn closing_a_session_cancels_and_unbinds() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 3);
    h.submit(sid, 4);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.actions();
    assert!(h.s.close_session(sid));
    let a = h.actions();
    assert_eq!(finished(&a).len(), 4);
    // It was running a task of the session: killed, not unbound (see tests_dispatch.rs).
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Kill { executor, .. } if *executor == e)));
    assert!(h.s.session(sid).is_none());
}

#[test]
fn session_slots_cap_its_executors() {
    let mut h = Harness::new(4);
    let sid = h.open(1, 2, 3);
    h.submit(sid, 10);
    let spawns = h
        .actions()
        .iter()
        .filter(|a| matches!(a, Action::Spawn { .. }))
        .count();
    assert_eq!(spawns, 2);
}

#[test]
fn a_task_past_its_timeout_fails_and_its_executor_is_killed() {
    let mut h = Harness::new(1);
    let spec = SessionSpec {
        application: "app".into(),
        timeout_secs: 1.5,
        ..Default::default()
    };
    h.s.open_session(SessionId(1), spec, 0, TaskCounts::default());
    let sid = SessionId(1);
    let tids = h.submit(sid, 2);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.actions();
    h.s.session_entered(e, sid, None, h.now);
    // The first task finishes after 1 s: the second one's clock starts then.
    h.now += Duration::from_secs(1);
    h.complete(e, sid, &tids[..1]);
    h.actions();
    assert_eq!(
        h.s.next_deadline(),
        Some(h.now + Duration::from_millis(1500))
    );
    h.now += Duration::from_millis(1400);
    h.s.schedule(h.now);
    assert!(finished(&h.actions()).is_empty(), "not yet");
    h.now += Duration::from_millis(100);
    h.s.schedule(h.now);
    let a = h.actions();
    match &a[..] {
        [Action::Finish(c), Action::Kill { executor, .. }] => {
            assert_eq!(c.key.task, tids[1]);
            let err = c.error.as_ref().unwrap();
            assert_eq!(err.kind, ErrorKind::ErrorTimeout);
            assert!(err.message.contains("1.5 s"), "{}", err.message);
            assert_eq!(*executor, e);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failure_the_service_marks_retryable_runs_again_until_attempts_run_out() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 1);
    let t = h.submit(sid, 1)[0];
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.actions();
    h.s.session_entered(e, sid, None, h.now);
    let mut f = TaskFailure::new(ErrorKind::ErrorUserException, "flaky");
    f.retryable = true;
    h.s.task_results(e, vec![(sid, t, Err(f.clone()))], h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(finished(&a).is_empty(), "retried, not failed: {a:?}");
    assert_eq!(dispatched(&a, e), vec![t]);
    h.s.task_results(e, vec![(sid, t, Err(f))], h.now);
    let done = finished(&h.actions());
    assert_eq!(
        done,
        vec![(t, TaskState::Failed)],
        "max_retries = 1: two attempts in all"
    );
}

#[test]
fn draining_dispatches_nothing_new() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 3);
    let tids = h.submit(sid, 5);
    let a = h.actions();
    let e = h.register_spawned(&a)[0];
    h.actions();
    h.s.session_entered(e, sid, None, h.now);
    assert_eq!(h.s.running_tasks(), 2);
    h.s.drain();
    h.complete(e, sid, &tids[..2]);
    let a = h.actions();
    assert_eq!(finished(&a).len(), 2, "running tasks finish");
    assert!(
        dispatched(&a, e).is_empty(),
        "queued ones stay queued: {a:?}"
    );
    assert_eq!(h.s.running_tasks(), 0);
    assert_eq!(h.s.session(sid).unwrap().counts.pending, 3);
}

#[test]
fn ids_the_daemon_never_stored_are_accepted_again_after_newer_ones() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 3);
    let x = Bytes::from_static(b"x");
    let old = TaskId::compose(ClientId(5), 1);
    let newer = TaskId::compose(ClientId(5), 2);
    // After a restart the newer submission arrives first; the older one was never stored.
    assert_eq!(h.s.accept(sid, vec![(newer, x.clone())]).unwrap().len(), 1);
    assert!(
        h.s.accept(sid, vec![(old, x.clone())]).unwrap().is_empty(),
        "looks like a dup"
    );
    assert!(h.s.allow_resubmit(sid, &[old]));
    assert_eq!(h.s.accept(sid, vec![(old, x.clone())]).unwrap().len(), 1);
    assert!(
        h.s.accept(sid, vec![(old, x)]).unwrap().is_empty(),
        "once only"
    );
}

/// Run `n` tasks on one executor, each taking `each`; the most tasks in flight at once.
fn widest_window(each: Duration, n: usize) -> usize {
    let mut h = Harness::with_config(
        1,
        SchedulerConfig {
            window: 2,
            window_max: 32,
            window_work: Duration::from_millis(2),
            ..SchedulerConfig::default()
        },
    );
    let sid = h.open(1, 0, 0);
    h.submit(sid, n);
    let a = h.actions();
    let exec = h.register_spawned(&a)[0];
    let mut inflight: std::collections::VecDeque<TaskId> = dispatched(&h.actions(), exec).into();
    let mut widest = inflight.len();
    while let Some(tid) = inflight.pop_front() {
        h.now += each;
        h.complete(exec, sid, &[tid]);
        inflight.extend(dispatched(&h.actions(), exec));
        widest = widest.max(inflight.len());
    }
    widest
}

#[test]
fn short_tasks_get_a_wider_window_and_long_ones_keep_the_minimum() {
    // 100 µs tasks: ~2 ms of work is 20 tasks in flight.
    let short = widest_window(Duration::from_micros(100), 400);
    assert!((15..=21).contains(&short), "short tasks: window {short}");
    // 10 µs tasks: capped at window_max.
    assert_eq!(widest_window(Duration::from_micros(10), 400), 32);
    // 50 ms tasks: the minimum window, nothing hoarded.
    assert_eq!(widest_window(Duration::from_millis(50), 40), 2);
}

#[test]
fn a_watched_id_submitted_during_its_lookup_is_not_offered_for_resubmission() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 0);
    let queued = TaskId::compose(ClientId(1), 10);
    let lost = TaskId::compose(ClientId(1), 11);
    h.s.looking_up(sid, &[queued, lost]);
    // The client's queued submission of `queued` arrives while storage is asked.
    let accepted = h.s.accept(sid, vec![(queued, Bytes::from_static(b"x"))]);
    assert_eq!(accepted.unwrap().len(), 1);
    let again = h.s.looked_up(sid, &[queued, lost], vec![queued, lost]);
    assert_eq!(
        again,
        vec![lost],
        "only the id never accepted may be resubmitted"
    );
    assert!(
        h.s.session(sid).unwrap().watching.is_empty(),
        "the lookup is forgotten"
    );
    // And a second lookup's answer with nothing pending leaves nothing behind.
    assert!(h.s.looked_up(sid, &[queued], vec![queued]).is_empty());
}
