//! Tests of [`SqliteReader`]: a read-only connection on the writer's file sees each commit
//! as soon as it is made and cannot write, and every introspection query walks an index range
//! in task-id order — never the whole session, never a sort (checked with EXPLAIN QUERY PLAN).

use std::collections::HashSet;

use super::tests::{finish, insert, session};
use super::{reader, SqliteReader, SqliteStorage};
use crate::ids::{SessionId, TaskId};
use crate::model::{key, TaskState};
use crate::storage::{Storage, WriteOp};

fn ids(v: &[crate::view::TaskView]) -> Vec<u64> {
    v.iter().map(|t| t.key.task.0).collect()
}

/// The plan SQLite chooses for `sql`, one line per step.
fn plan(db: &SqliteStorage, sql: &str) -> Vec<String> {
    let mut stmt = db
        .conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap();
    let params = vec![1i64; stmt.parameter_count()];
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

#[test]
fn a_reader_sees_each_commit_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flame.db");
    let mut db = SqliteStorage::open(&path).unwrap();
    db.apply(&[WriteOp::PutSession(session(1, 1)), insert(1, [1, 2, 3])])
        .unwrap();
    let r = SqliteReader::open(&path).unwrap();
    let (_, counts) = r.session(SessionId(1)).unwrap().unwrap();
    assert_eq!(counts.pending, 3);

    db.apply(&[finish(1, 2, TaskState::Failed, None)]).unwrap();
    let (_, counts) = r.session(SessionId(1)).unwrap().unwrap();
    assert_eq!(
        (counts.pending, counts.failed),
        (2, 1),
        "the next read sees the commit"
    );
    let failed = r
        .task_views(SessionId(1), Some(TaskState::Failed), 10, 0)
        .unwrap();
    assert_eq!(ids(&failed), [2]);
    let v = r.task_view(key(SessionId(1), TaskId(2))).unwrap().unwrap();
    assert_eq!(v.state, TaskState::Failed);
    assert_eq!(
        r.task_log(key(SessionId(1), TaskId(2))).unwrap(),
        Some(String::new())
    );
    assert!(r.task_view(key(SessionId(1), TaskId(9))).unwrap().is_none());

    let e = r.conn.execute("DELETE FROM tasks", []).unwrap_err();
    assert!(e.to_string().contains("readonly"), "{e}");
    let e = SqliteReader::open(&dir.path().join("missing.db")).unwrap_err();
    assert!(e.to_string().contains("missing.db"), "{e}");
}

#[test]
fn pending_pages_leave_out_tasks_on_executors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flame.db");
    let mut db = SqliteStorage::open(&path).unwrap();
    db.apply(&[
        WriteOp::PutSession(session(1, 1)),
        insert(1, 1..=6),
        finish(1, 1, TaskState::Succeeded, None),
    ])
    .unwrap();
    let r = SqliteReader::open(&path).unwrap();
    let running: HashSet<TaskId> = [TaskId(2), TaskId(4)].into();
    let page = r.pending_views(SessionId(1), &running, 10, 0).unwrap();
    assert_eq!(ids(&page), [3, 5, 6]);
    let page = r.pending_views(SessionId(1), &running, 1, 1).unwrap();
    assert_eq!(ids(&page), [5], "the offset counts pending tasks only");
}

#[test]
fn introspection_queries_walk_an_index_in_task_id_order() {
    let db = SqliteStorage::open_in_memory().unwrap();
    for (sql, index) in [
        (reader::page_sql(false), "PRIMARY KEY"),
        (reader::page_sql(true), "tasks_by_state"),
        (
            "SELECT state, COUNT(*) FROM tasks WHERE session_id = ?1 GROUP BY state".into(),
            "COVERING INDEX tasks_by_state",
        ),
    ] {
        let p = plan(&db, &sql);
        assert!(
            p.iter().any(|step| step.contains(index)),
            "{sql}\nshould use {index}: {p:?}"
        );
        assert!(
            !p.iter()
                .any(|step| step.contains("TEMP B-TREE") || step.starts_with("SCAN")),
            "{sql}\nmust neither sort nor scan the table: {p:?}"
        );
    }
}
