//! Draining a node: no new executor there, its executors leave once the tasks they were sent
//! are done, the rest of the work moves to other nodes and every task finishes once.

use std::collections::HashMap;

use super::tests::{dispatched, Harness};
use super::*;
use crate::ids::{ExecutorId, NodeId, TaskId};

fn kills(actions: &[Action]) -> Vec<(NodeId, ExecutorId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Kill { node, executor, .. } => Some((*node, *executor)),
            _ => None,
        })
        .collect()
}

fn spawned_on(actions: &[Action]) -> Vec<NodeId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { node, .. } => Some(*node),
            _ => None,
        })
        .collect()
}

#[test]
fn drained_node_finishes_what_it_was_sent_and_the_rest_runs_elsewhere() {
    let mut h = Harness::new(2);
    let sid = h.open(1, 0, 0);
    let tids = h.submit(sid, 10);
    let a = h.actions();
    assert_eq!(spawned_on(&a), vec![NodeId(1), NodeId(1)]);
    let execs = h.register_spawned(&a);
    let a = h.actions();
    // Window 2: each executor on node 1 holds two tasks.
    let sent: HashMap<ExecutorId, Vec<TaskId>> =
        execs.iter().map(|e| (*e, dispatched(&a, *e))).collect();
    assert!(sent.values().all(|t| t.len() == 2));

    h.s.add_node(NodeId(2), "n2".into(), 2);
    assert!(h.s.drain_node(NodeId(1)));
    assert!(
        !h.s.drain_node(NodeId(9)),
        "an unknown node cannot be drained"
    );
    h.s.schedule(h.now);
    let a = h.actions();
    assert!(kills(&a).is_empty(), "busy executors are not killed");
    // The session still wants executors: they start on node 2 only.
    assert!(spawned_on(&a).iter().all(|n| *n == NodeId(2)));
    let elsewhere = h.register_spawned(&a);
    assert!(!elsewhere.is_empty());
    let a = h.actions();
    let mut done: Vec<TaskId> = Vec::new();
    let mut moved: Vec<(ExecutorId, Vec<TaskId>)> =
        elsewhere.iter().map(|e| (*e, dispatched(&a, *e))).collect();

    // Node 1's executors finish their windows and get nothing more.
    for e in &execs {
        h.complete(*e, sid, &sent[e]);
        done.extend(&sent[e]);
        let a = h.actions();
        assert!(
            dispatched(&a, *e).is_empty(),
            "nothing new to a draining node"
        );
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Unbind { executor, .. } if executor == e)));
        h.s.session_left(*e, sid, h.now);
        h.s.schedule(h.now);
        let a = h.actions();
        assert_eq!(kills(&a), vec![(NodeId(1), *e)]);
        assert!(
            !h.s.node_drained(NodeId(1)),
            "its process has not exited yet"
        );
        h.s.executor_exited(NodeId(1), *e, "stopped", h.now);
        h.s.schedule(h.now);
        let a = h.actions();
        assert!(spawned_on(&a).iter().all(|n| *n == NodeId(2)));
        moved.extend(elsewhere.iter().map(|x| (*x, dispatched(&a, *x))));
    }
    assert!(h.s.node_drained(NodeId(1)));
    assert!(!h.s.node_drained(NodeId(2)), "node 2 is not draining");

    // The rest runs on node 2.
    while done.len() < tids.len() {
        let batch: Vec<(ExecutorId, Vec<TaskId>)> = std::mem::take(&mut moved);
        assert!(batch.iter().any(|(_, t)| !t.is_empty()), "work is stuck");
        for (e, t) in batch {
            if t.is_empty() {
                continue;
            }
            h.complete(e, sid, &t);
            done.extend(&t);
            let a = h.actions();
            moved.extend(elsewhere.iter().map(|x| (*x, dispatched(&a, *x))));
        }
    }
    done.sort_unstable();
    let mut all = tids.clone();
    all.sort_unstable();
    assert_eq!(done, all, "every task ran exactly once");
}

#[test]
fn idle_and_starting_executors_leave_a_draining_node() {
    let mut h = Harness::new(2);
    let sid = h.open(1, 1, 0);
    h.submit(sid, 1);
    let a = h.actions();
    let execs = h.register_spawned(&a);
    let a = h.actions();
    let t = dispatched(&a, execs[0]);
    h.complete(execs[0], sid, &t);
    h.s.close_session(sid);
    h.s.schedule(h.now);
    h.actions();
    // Another session's executor is still starting when the drain begins.
    let sid2 = h.open(2, 1, 0);
    h.submit(sid2, 1);
    let a = h.actions();
    h.s.drain_node(NodeId(1));
    h.s.schedule(h.now);
    let starting: Vec<ExecutorId> = a
        .iter()
        .filter_map(|x| match x {
            Action::Spawn { executor, .. } => Some(*executor),
            _ => None,
        })
        .collect();
    let a = h.actions();
    let mut killed = kills(&a);
    // The closed session's executor was unbinding: it leaves when the unbind is done.
    h.s.session_left(execs[0], sid, h.now);
    killed.extend(kills(&h.actions()));
    for e in &starting {
        assert!(h.s.executor_registered(*e, h.now));
        killed.extend(kills(&h.actions()));
    }
    let expected: Vec<ExecutorId> = execs.iter().chain(&starting).copied().collect();
    let mut got: Vec<ExecutorId> = killed.iter().map(|(_, e)| *e).collect();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "every executor of the node is stopped: {killed:?}"
    );
    for (n, e) in killed {
        h.s.executor_exited(n, e, "stopped", h.now);
    }
    assert!(h.s.node_drained(NodeId(1)));
    // Nothing can start there any more: the session waits for another node.
    h.s.schedule(h.now);
    assert!(spawned_on(&h.actions()).is_empty());
}
