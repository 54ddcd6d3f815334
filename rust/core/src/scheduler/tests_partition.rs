//! A node cut off from the head (#13): its tasks run again on another node, and whatever its
//! old executor sends once the link heals is discarded — a task's result is taken only from
//! the executor its current attempt was given to (exactly-once results, at-least-once
//! execution).

use std::time::Duration;

use bytes::Bytes;

use super::tests::{dispatched, Harness};
use super::*;
use crate::ids::NodeId;
use crate::model::{ErrorKind, TaskFailure, TaskState};

#[test]
fn a_cut_off_nodes_late_result_is_discarded_and_the_rerun_is_the_one_result() {
    let mut h = Harness::new(1);
    h.s.add_node(NodeId(2), "n2".into(), 1);
    let sid = h.open(1, 1, 3);
    let t = h.submit(sid, 1)[0];
    let a = h.actions();
    let e1 = h.register_spawned(&a)[0];
    assert_eq!(dispatched(&h.actions(), e1), vec![t]);
    let cut_off = h.s.executor(e1).expect("e1").node;

    // The head declares the cut-off node lost; the task runs again on the other node.
    h.s.remove_node(cut_off, h.now);
    h.now += Duration::from_secs(3);
    h.s.schedule(h.now);
    let a = h.actions();
    let e2 = h.register_spawned(&a)[0];
    assert_ne!(h.s.executor(e2).expect("e2").node, cut_off);
    assert_eq!(dispatched(&h.actions(), e2), vec![t]);

    // The link heals and the old attempt's result arrives: not this attempt's, discarded.
    let stale = vec![(sid, t, Ok(Bytes::from_static(b"stale")))];
    h.s.task_results(e1, stale, h.now);
    h.s.schedule(h.now);
    let finished: Vec<_> = h
        .actions()
        .into_iter()
        .filter(|a| matches!(a, Action::Finish(_)))
        .collect();
    assert!(
        finished.is_empty(),
        "a stale attempt finished the task: {finished:?}"
    );

    // The current attempt's result is the task's one result.
    h.complete(e2, sid, &[t]);
    let outputs: Vec<_> = h
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Finish(c) => Some((c.key.task, c.state, c.output)),
            _ => None,
        })
        .collect();
    assert_eq!(
        outputs,
        vec![(t, TaskState::Succeeded, Bytes::from_static(b"ok"))]
    );
}

#[test]
fn a_session_closed_for_its_clients_lease_fails_its_tasks_with_the_reason() {
    let mut h = Harness::new(1);
    let sid = h.open(1, 1, 3);
    let tasks = h.submit(sid, 3);
    let a = h.actions();
    h.register_spawned(&a);
    h.actions();
    let why = TaskFailure::new(ErrorKind::ErrorSessionClosed, "lease ran out");
    assert!(h.s.close_session_failing(sid, Some(why.clone())));
    let failed: Vec<_> = h
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Finish(c) => Some((c.key.task, c.state, c.error)),
            _ => None,
        })
        .collect();
    let expected: Vec<_> = tasks
        .iter()
        .map(|t| (*t, TaskState::Failed, Some(why.clone())))
        .collect();
    assert_eq!(failed, expected);
}
