//! SQLite-only tests of [`SqliteStorage`] (migrations from old files) and the record fixtures
//! every storage test uses. The trait's contract (every op round-trips, resubmission is
//! idempotent, a restart resumes, a failed batch leaves no trace) is tested against both
//! engines in `storage/conformance.rs`; `tests_limits.rs` covers corruption, schema
//! versions, the query plan and scale.

use bytes::Bytes;

use super::SqliteStorage;
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{key, SessionRecord, SessionSpec, SessionState, TaskFailure, TaskState};
use crate::storage::{NewTask, Storage, WriteOp};

pub(crate) fn session(id: u64, created_ms: i64) -> SessionRecord {
    SessionRecord {
        id: SessionId(id),
        spec: SessionSpec {
            application: "echo".into(),
            app_spec: Bytes::from_static(b"{\"cmd\":1}"),
            common_data: Bytes::from_static(b"common"),
            slots: 4,
            max_retries: 3,
            timeout_secs: 2.5,
            priority: -7,
            python: "/usr/bin/python3".into(),
            owner: 42,
            weight: 2.5,
            min_executors: 2,
            user: "ana".into(),
        },
        state: SessionState::Open,
        created_ms,
        closed_ms: None,
    }
}

pub(crate) fn insert(id: u64, tasks: impl IntoIterator<Item = u64>) -> WriteOp {
    WriteOp::InsertTasks {
        session: SessionId(id),
        tasks: tasks
            .into_iter()
            .map(|t| NewTask {
                id: TaskId(t),
                input: Bytes::from(format!("in-{t}")),
            })
            .collect(),
        created_ms: 100,
    }
}

pub(crate) fn finish(s: u64, t: u64, state: TaskState, error: Option<TaskFailure>) -> WriteOp {
    WriteOp::FinishTask {
        key: key(SessionId(s), TaskId(t)),
        state,
        output: Bytes::from_static(b"out"),
        error,
        attempts: 2,
        finished_ms: 200,
        started_ms: Some(150),
        ran_on: Some((ExecutorId(7), NodeId(3))),
        keep_input: false,
    }
}

#[test]
fn a_version_2_file_gains_the_task_logs_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut db = SqliteStorage::open(&path).unwrap();
        db.apply(&[WriteOp::PutSession(session(1, 10)), insert(1, [1])])
            .unwrap();
    }
    // Turn the file back into what a version-2 build wrote.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(super::schema::DOWNGRADE_TO_V2).unwrap();
    drop(conn);

    let mut db = SqliteStorage::open(&path).unwrap();
    let version: i32 = db
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, super::schema::VERSION);
    let k = key(SessionId(1), TaskId(1));
    db.apply(&[WriteOp::PutTaskLog {
        key: k,
        log: "kept".into(),
    }])
    .unwrap();
    assert_eq!(db.get_task_log(k).unwrap().as_deref(), Some("kept"));
    assert_eq!(db.load().unwrap().tasks.len(), 1, "the old rows are intact");
}
