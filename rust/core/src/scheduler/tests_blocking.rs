//! Executors blocked in nested waits (`blocking.rs`): the slot accounting, the window given
//! back, the way back within slots, and a whole recursive tree (`rec(n)` waiting on two
//! `rec(n-1)`) simulated on a 2-slot node with virtual time.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::tests::{dispatched, Harness};
use super::*;
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};

fn spawns(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Spawn { .. }))
        .count()
}

#[test]
fn a_blocked_executor_frees_its_slot_and_gives_back_its_window() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 3);
    let tids = h.submit(sid, 3);
    let a = h.actions();
    let e1 = h.register_spawned(&a)[0];
    let a = h.actions();
    assert_eq!(dispatched(&a, e1), tids[..2], "a window of two");
    h.s.session_entered(e1, sid, None, h.now);

    // The first task waits on others: the second comes back, a slot opens.
    h.s.executor_blocked(e1, h.now);
    h.s.tasks_returned(e1, sid, &[tids[1]], h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(a.contains(&Action::RecordAttempts {
        key: crate::model::key(sid, tids[1]),
        attempts: 0
    }));
    assert_eq!(spawns(&a), 1, "the blocked executor's slot is free");
    assert_eq!(h.s.blocked_on(NodeId(1)), 1);
    let e2 = h.register_spawned(&a)[0];
    let a = h.actions();
    assert_eq!(
        dispatched(&a, e2),
        tids[1..],
        "the returned task runs first"
    );
    assert!(
        dispatched(&a, e1).is_empty(),
        "nothing is sent to a blocked executor"
    );

    h.complete(e2, sid, &tids[1..]);
    let a = h.actions();
    assert!(dispatched(&a, e1).is_empty());
    assert!(
        !a.iter().any(|a| matches!(a, Action::Unbind { .. })),
        "within slots: e2 stays warm"
    );

    // Back from the wait: the node is over its one slot, so the warm e2 leaves at once
    // and is stopped once it has left; e1 continues its task.
    h.s.executor_unblocked(e1, h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(a.contains(&Action::Unbind {
        executor: e2,
        session: sid
    }));
    h.s.session_left(e2, sid, h.now);
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Kill { executor, .. } if *executor == e2)));
    h.s.executor_exited(NodeId(1), e2, "killed", h.now);
    h.complete(e1, sid, &tids[..1]);
    assert_eq!(h.s.session(sid).unwrap().counts.succeeded, 3);
    assert_eq!(h.s.blocked_on(NodeId(1)), 0);
    assert_eq!(h.s.nodes().next().unwrap().used_slots(), 1);
}

#[test]
fn a_blocked_executor_that_is_lost_gives_its_counts_back() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 0, 3);
    let tids = h.submit(sid, 1);
    let a = h.actions();
    let e1 = h.register_spawned(&a)[0];
    h.s.session_entered(e1, sid, None, h.now);
    h.s.executor_blocked(e1, h.now);
    assert_eq!(h.s.session(sid).unwrap().blocked, 1);
    h.s.executor_lost(e1, "gone", h.now);
    h.s.schedule(h.now);
    assert_eq!(h.s.blocked_on(NodeId(1)), 0);
    assert_eq!(h.s.session(sid).unwrap().blocked, 0);
    assert_eq!(h.s.session(sid).unwrap().pending, [tids[0]]);
}

/// `rec(n) = 1 if n == 0 else sum(get([rec(n-1), rec(n-1)]))`, each call's children in a
/// session of their own, on one node of 2 slots. Executors run their window in order, as
/// the real ones do; a task that waits blocks and gives back the tasks queued behind it.
/// Returns the peak number of executors.
fn simulate_recursion(depth: u32) -> usize {
    let mut h = Harness::new(2);
    type Key = (SessionId, TaskId);
    let mut next_session = 1;
    let root_sid = h.open(next_session, 0, 3);
    let mut level: HashMap<SessionId, u32> = HashMap::from([(root_sid, depth)]);
    let root = (root_sid, h.submit(root_sid, 1)[0]);
    // Child session -> (parent executor, parent task, children left).
    let mut parent: HashMap<SessionId, (ExecutorId, Key, usize)> = HashMap::new();
    let mut queues: HashMap<ExecutorId, VecDeque<Key>> = HashMap::new();
    let mut running: HashMap<ExecutorId, Key> = HashMap::new();
    let mut peak = 0;
    let mut root_done = false;
    let mut stalled = 0;
    for _round in 0..100_000 {
        let actions = h.actions();
        let mut progressed = !actions.is_empty();
        for a in actions {
            match a {
                Action::Spawn { executor, .. } => {
                    assert!(h.s.executor_registered(executor, h.now));
                }
                Action::Kill { node, executor, .. } => {
                    assert!(
                        !running.contains_key(&executor),
                        "a busy executor is killed"
                    );
                    h.s.executor_exited(node, executor, "stopped", h.now);
                }
                Action::Bind { executor, session } => {
                    h.s.session_entered(executor, session, None, h.now);
                }
                Action::Unbind { executor, session } => h.s.session_left(executor, session, h.now),
                Action::Dispatch {
                    executor,
                    session,
                    tasks,
                } => {
                    assert!(
                        !h.s.executor(executor).unwrap().blocked,
                        "sent to a blocked one"
                    );
                    let q = queues.entry(executor).or_default();
                    q.extend(tasks.iter().map(|t| (session, t.0)));
                }
                Action::Finish(c) => {
                    assert_eq!(c.state, crate::model::TaskState::Succeeded);
                    if (c.key.session, c.key.task) == root {
                        root_done = true;
                    }
                    let Some(entry) = parent.get_mut(&c.key.session) else {
                        continue;
                    };
                    entry.2 -= 1;
                    if entry.2 == 0 {
                        let (pe, (psid, ptid), _) = parent.remove(&c.key.session).unwrap();
                        h.s.close_session(c.key.session);
                        h.s.executor_unblocked(pe, h.now);
                        running.remove(&pe);
                        let ok = Ok(Bytes::from_static(b"ok"));
                        h.s.task_results(pe, vec![(psid, ptid, ok)], h.now);
                    }
                }
                Action::RecordAttempts { .. } => {}
            }
        }
        // Executors that are free start the next task of their window.
        let mut free: Vec<ExecutorId> = queues
            .iter()
            .filter(|(e, q)| !q.is_empty() && !running.contains_key(e))
            .map(|(e, _)| *e)
            .collect();
        free.sort_unstable();
        for e in free {
            let (sid, tid) = queues.get_mut(&e).unwrap().pop_front().unwrap();
            progressed = true;
            if level[&sid] == 0 {
                let ok = Ok(Bytes::from_static(b"ok"));
                h.s.task_results(e, vec![(sid, tid, ok)], h.now);
                continue;
            }
            running.insert(e, (sid, tid));
            next_session += 1;
            let child = h.open(next_session, 0, 3);
            level.insert(child, level[&sid] - 1);
            parent.insert(child, (e, (sid, tid), 2));
            h.submit(child, 2);
            h.s.executor_blocked(e, h.now);
            let back: Vec<TaskId> = queues.get_mut(&e).unwrap().drain(..).map(|k| k.1).collect();
            h.s.tasks_returned(e, sid, &back, h.now);
        }
        h.s.schedule(h.now);
        peak = peak.max(h.s.executors().count());
        if root_done {
            return peak;
        }
        stalled = if progressed { 0 } else { stalled + 1 };
        assert!(stalled < 2, "deadlock at depth {depth}");
    }
    panic!("rec({depth}) did not finish");
}

#[test]
fn recursive_tasks_finish_on_two_slots_to_depth_five() {
    for depth in 1..=5 {
        let peak = simulate_recursion(depth);
        // Every waiting parent may hold a process (2^depth - 1 of them), plus two slots.
        assert!(peak <= (1 << depth) + 1, "depth {depth}: peak {peak}");
    }
}
