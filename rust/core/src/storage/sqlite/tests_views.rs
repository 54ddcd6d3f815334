//! Tests of the introspection reads: task views carry timings and placement but no payload,
//! and lists page in task-id order (without sorting) with an optional state filter.

use bytes::Bytes;

use super::tests::{finish, insert, session};
use super::SqliteStorage;
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{key, ErrorKind, TaskFailure, TaskState};
use crate::storage::{Storage, WriteOp};

fn db_with_tasks() -> SqliteStorage {
    let mut db = SqliteStorage::open_in_memory().unwrap();
    db.apply(&[
        WriteOp::PutSession(session(1, 1)),
        WriteOp::PutSession(session(2, 2)),
        insert(1, [30, 10, 20, 40]),
        insert(2, [10]),
    ])
    .unwrap();
    let mut failure = TaskFailure::new(ErrorKind::ErrorUserException, "boom");
    failure.traceback = "Traceback: line 1".into();
    failure.payload = Bytes::from_static(b"pickled");
    db.apply(&[
        finish(1, 10, TaskState::Succeeded, None),
        finish(1, 20, TaskState::Failed, Some(failure)),
    ])
    .unwrap();
    db
}

#[test]
fn a_finished_task_view_has_timings_placement_and_no_payload() {
    let mut db = db_with_tasks();
    let v = db
        .get_task_view(key(SessionId(1), TaskId(20)))
        .unwrap()
        .unwrap();
    assert_eq!(v.state, TaskState::Failed);
    assert_eq!(
        (v.created_ms, v.started_ms, v.finished_ms),
        (100, Some(150), Some(200))
    );
    assert_eq!(v.ran_on, Some((ExecutorId(7), NodeId(3))));
    let e = v.error.unwrap();
    assert_eq!(
        (e.message.as_str(), e.traceback.as_str()),
        ("boom", "Traceback: line 1")
    );
    assert!(
        e.payload.is_empty(),
        "the pickled exception is not part of a view"
    );
    assert_eq!(v.output_bytes, 3);

    let pending = db
        .get_task_view(key(SessionId(1), TaskId(40)))
        .unwrap()
        .unwrap();
    assert_eq!(pending.state, TaskState::Pending);
    assert_eq!((pending.started_ms, pending.ran_on), (None, None));
    assert!(db
        .get_task_view(key(SessionId(1), TaskId(99)))
        .unwrap()
        .is_none());
}

#[test]
fn lists_page_in_task_id_order_and_filter_by_state() {
    let mut db = db_with_tasks();
    let ids = |v: Vec<crate::view::TaskView>| v.iter().map(|t| t.key.task.0).collect::<Vec<_>>();
    let all = db.list_task_views(SessionId(1), None, 10, 0).unwrap();
    assert_eq!(
        ids(all),
        [10, 20, 30, 40],
        "task-id order, other sessions left out"
    );
    let page = db.list_task_views(SessionId(1), None, 2, 1).unwrap();
    assert_eq!(ids(page), [20, 30]);
    let pending = db
        .list_task_views(SessionId(1), Some(TaskState::Pending), 10, 0)
        .unwrap();
    assert_eq!(ids(pending), [30, 40]);
    let query_plan = "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE session_id = 1 \
                      AND (1 OR state = 1) ORDER BY task_id LIMIT 2";
    let plan: Vec<String> = {
        let mut stmt = db.conn.prepare(query_plan).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    assert!(
        !plan.iter().any(|p| p.contains("TEMP B-TREE")),
        "a page must not sort the whole session: {plan:?}"
    );
    let failed = db
        .list_task_views(SessionId(1), Some(TaskState::Failed), 10, 0)
        .unwrap();
    assert_eq!(ids(failed), [20]);
    assert!(db
        .list_task_views(SessionId(3), None, 10, 0)
        .unwrap()
        .is_empty());
}
