//! Edge and scale tests of [`SqliteStorage`]: ids above `i64::MAX`, ordering of
//! `list_sessions`, corrupt rows, a schema from a newer build, the `load` query plan, and
//! large batches (plus an ignored throughput benchmark).

use std::time::Instant;

use bytes::Bytes;

use super::tests::{finish, insert, session};
use super::SqliteStorage;
use crate::error::FlameError;
use crate::ids::{SessionId, TaskId};
use crate::model::{key, TaskState};
use crate::storage::{NewTask, Storage, WriteOp};

#[test]
fn corrupt_rows_are_storage_errors() {
    let mut db = SqliteStorage::open_in_memory().unwrap();
    db.apply(&[WriteOp::PutSession(session(1, 0)), insert(1, [1, 2])])
        .unwrap();
    db.conn
        .execute("UPDATE tasks SET state = 99 WHERE task_id = 1", [])
        .unwrap();
    db.conn
        .execute("UPDATE tasks SET attempts = -1 WHERE task_id = 2", [])
        .unwrap();
    let err = db.get_task(key(SessionId(1), TaskId(1))).unwrap_err();
    assert!(
        matches!(err, FlameError::Storage(ref m) if m.contains("unknown state 99")),
        "{err}"
    );
    let err = db.get_task(key(SessionId(1), TaskId(2))).unwrap_err();
    assert!(
        matches!(err, FlameError::Storage(ref m) if m.contains("attempts")),
        "{err}"
    );
    assert!(matches!(
        db.get_session(SessionId(1)),
        Err(FlameError::Storage(_))
    ));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStorage::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStorage::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn a_version_2_file_gains_the_scheduling_columns_with_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStorage::open(&path).unwrap());
    {
        // Turn the fresh file back into what a version-2 build wrote.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(super::schema::DOWNGRADE_TO_V2).unwrap();
        conn.execute_batch(
            "INSERT INTO sessions (id, application, app_spec, common_data, slots, max_retries,
                 timeout_secs, priority, python, state, created_ms, owner)
             VALUES (5, 'old', x'', x'', 3, 1, 0.0, 2, 'py', 'open', 10, 0);",
        )
        .unwrap();
    }
    let mut db = SqliteStorage::open(&path).unwrap();
    let (s, _) = db.get_session(SessionId(5)).unwrap().expect("kept");
    assert_eq!((s.spec.slots, s.spec.priority), (3, 2));
    assert_eq!(s.spec.weight, 1.0);
    assert_eq!(s.spec.min_executors, 0);
    assert_eq!(s.spec.user, "");
}

#[test]
fn unfinished_index_matches_task_states_and_is_used() {
    // The partial index spells the states as literals; they must be these two.
    assert_eq!(
        (TaskState::Pending.as_i32(), TaskState::Running.as_i32()),
        (1, 2)
    );
    let db = SqliteStorage::open_in_memory().unwrap();
    let plan: Vec<String> = db
        .conn
        .prepare(concat!(
            "EXPLAIN QUERY PLAN SELECT t.input FROM tasks AS t CROSS JOIN sessions AS s \
             ON s.id = t.session_id WHERE t.",
            super::schema::unfinished!(),
            " AND s.state = 'open' ORDER BY t.seq"
        ))
        .unwrap()
        .query_map([], |r| r.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("tasks_unfinished") && !plan.contains("TEMP B-TREE"),
        "{plan}"
    );
}

/// Inserts `n` tasks in batches of `batch` into a file-backed database; returns tasks/s.
fn insert_rate(n: u64, batch: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStorage::open(&dir.path().join("state.db")).unwrap();
    db.apply(&[WriteOp::PutSession(session(1, 0))]).unwrap();
    let input = Bytes::from(vec![7u8; 64]);
    let started = Instant::now();
    for start in (0..n).step_by(batch as usize) {
        let tasks = (start..n.min(start + batch))
            .map(|t| NewTask {
                id: TaskId((9u64 << 32) | t),
                input: input.clone(),
            })
            .collect();
        db.apply(&[WriteOp::InsertTasks {
            session: SessionId(1),
            tasks,
            created_ms: 1,
        }])
        .unwrap();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(db.get_session(SessionId(1)).unwrap().unwrap().1.pending, n);
    rate
}

#[test]
fn big_batch_of_20000_inserts() {
    let rate = insert_rate(20_000, 20_000);
    println!("20,000 inserts in one batch: {rate:.0} tasks/s");
}

/// `cargo test --release -p flame-core --lib throughput -- --ignored --nocapture`
#[test]
#[ignore = "benchmark; run by hand in release"]
fn throughput() {
    let rate = insert_rate(1_000_000, 10_000);
    println!("1,000,000 inserts in batches of 10,000: {rate:.0} tasks/s");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut db = SqliteStorage::open(&path).unwrap();
    db.apply(&[WriteOp::PutSession(session(1, 0)), insert(1, 0..200_000)])
        .unwrap();
    let started = Instant::now();
    for chunk in (0..100_000u64).collect::<Vec<_>>().chunks(10_000) {
        let ops: Vec<_> = chunk
            .iter()
            .map(|&t| finish(1, t, TaskState::Succeeded, None))
            .collect();
        db.apply(&ops).unwrap();
    }
    println!(
        "finish: {:.0} tasks/s",
        100_000.0 / started.elapsed().as_secs_f64()
    );
    drop(db);
    let started = Instant::now();
    let snap = SqliteStorage::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.tasks.len(), 100_000);
    println!(
        "reopen + load of 100,000 unfinished of 200,000: {:?}",
        started.elapsed()
    );
}
