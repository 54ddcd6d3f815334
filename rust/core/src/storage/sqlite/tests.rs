//! Behaviour tests of [`SqliteStorage`]: every op round-trips, resubmission is idempotent, a
//! restart resumes from the file, and a failed batch leaves no trace. The shared fixtures live
//! here; `tests_limits.rs` covers odd ids, corruption, schema versions, the query plan and scale.

use bytes::Bytes;

use super::SqliteStorage;
use crate::error::FlameError;
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{
    key, ApplicationRecord, ErrorKind, SessionRecord, SessionSpec, SessionState, TaskFailure,
    TaskState,
};
use crate::storage::{NewTask, Storage, WriteOp};

pub(super) fn session(id: u64, created_ms: i64) -> SessionRecord {
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

pub(super) fn insert(id: u64, tasks: impl IntoIterator<Item = u64>) -> WriteOp {
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

pub(super) fn finish(s: u64, t: u64, state: TaskState, error: Option<TaskFailure>) -> WriteOp {
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
fn every_op_round_trips() {
    let mut db = SqliteStorage::open_in_memory().unwrap();
    let app = ApplicationRecord {
        name: "echo".into(),
        spec: Bytes::from_static(b"spec"),
        description: "says it back".into(),
        created_ms: 5,
    };
    let failure = TaskFailure {
        kind: ErrorKind::ErrorUserException,
        message: "boom".into(),
        traceback: "Traceback ...".into(),
        payload: Bytes::from_static(b"pickled"),
        retryable: false,
    };
    db.apply(&[
        WriteOp::PutApplication(app.clone()),
        WriteOp::PutSession(session(1, 10)),
        insert(1, [1, 2, 3]),
        WriteOp::SetAttempts {
            key: key(SessionId(1), TaskId(3)),
            attempts: 1,
        },
        finish(1, 1, TaskState::Succeeded, None),
        finish(1, 2, TaskState::Failed, Some(failure.clone())),
        WriteOp::SetMeta {
            key: "next_session".into(),
            value: u64::MAX,
        },
    ])
    .unwrap();

    let done = db.get_task(key(SessionId(1), TaskId(1))).unwrap().unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!((done.output.as_ref(), done.attempts), (&b"out"[..], 2));
    assert_eq!((done.created_ms, done.finished_ms), (100, Some(200)));
    assert!(done.input.is_empty(), "input is dropped once final");
    assert_eq!(done.error, None);
    let failed = db.get_task(key(SessionId(1), TaskId(2))).unwrap().unwrap();
    assert_eq!(failed.error, Some(failure));
    let waiting = db.get_task(key(SessionId(1), TaskId(3))).unwrap().unwrap();
    assert_eq!((waiting.state, waiting.attempts), (TaskState::Pending, 1));
    assert_eq!(waiting.input.as_ref(), b"in-3");
    assert_eq!(db.get_task(key(SessionId(1), TaskId(9))).unwrap(), None);

    let (s, counts) = db.get_session(SessionId(1)).unwrap().unwrap();
    assert_eq!(s, session(1, 10));
    assert_eq!((counts.pending, counts.succeeded, counts.failed), (1, 1, 1));

    let mut changed = session(1, 10);
    changed.spec.slots = 9;
    db.apply(&[
        WriteOp::PutApplication(ApplicationRecord {
            description: "v2".into(),
            ..app
        }),
        WriteOp::PutSession(changed.clone()),
    ])
    .unwrap();
    assert_eq!(db.get_session(SessionId(1)).unwrap().unwrap().0, changed);

    db.apply(&[WriteOp::CloseSession {
        id: SessionId(1),
        closed_ms: 300,
    }])
    .unwrap();
    let (s, _) = db.get_session(SessionId(1)).unwrap().unwrap();
    assert_eq!((s.state, s.closed_ms), (SessionState::Closed, Some(300)));

    let snap = db.load().unwrap();
    assert_eq!(snap.applications.len(), 1);
    assert_eq!(snap.applications[0].description, "v2");
    assert_eq!(snap.meta.get("next_session"), Some(&u64::MAX));
    assert!(snap.sessions.is_empty() && snap.tasks.is_empty() && snap.counts.is_empty());
}

#[test]
fn resubmitted_tasks_are_ignored() {
    let mut db = SqliteStorage::open_in_memory().unwrap();
    db.apply(&[WriteOp::PutSession(session(1, 0)), insert(1, [1, 2])])
        .unwrap();
    let again = WriteOp::InsertTasks {
        session: SessionId(1),
        tasks: vec![NewTask {
            id: TaskId(2),
            input: Bytes::from_static(b"other"),
        }],
        created_ms: 999,
    };
    db.apply(&[again.clone(), again]).unwrap();
    let t = db.get_task(key(SessionId(1), TaskId(2))).unwrap().unwrap();
    assert_eq!(
        (t.input.as_ref(), t.created_ms),
        (&b"in-2"[..], 100),
        "first submission wins"
    );
    assert_eq!(db.get_session(SessionId(1)).unwrap().unwrap().1.pending, 2);
}

#[test]
fn reopening_resumes_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut db = SqliteStorage::open(&path).unwrap();
        // Ids decrease across batches: the snapshot must follow submission order, not ids.
        db.apply(&[WriteOp::PutSession(session(1, 0)), insert(1, [30, 20])])
            .unwrap();
        db.apply(&[
            WriteOp::PutSession(session(2, 1)),
            insert(2, [5]),
            insert(1, [10]),
            WriteOp::SetAttempts {
                key: key(SessionId(1), TaskId(20)),
                attempts: 2,
            },
            finish(1, 30, TaskState::Succeeded, None),
            WriteOp::CloseSession {
                id: SessionId(2),
                closed_ms: 50,
            },
        ])
        .unwrap();
        // No op writes `running`; a crash mid-attempt is simulated by hand.
        db.conn
            .execute("UPDATE tasks SET state = 2 WHERE task_id = 20", [])
            .unwrap();
    }
    let mut db = SqliteStorage::open(&path).unwrap();
    let snap = db.load().unwrap();
    assert_eq!(snap.sessions, vec![session(1, 0)]);
    let got: Vec<_> = snap
        .tasks
        .iter()
        .map(|t| (t.key.task.0, t.state, t.attempts))
        .collect();
    assert_eq!(
        got,
        [(20, TaskState::Pending, 2), (10, TaskState::Pending, 0)]
    );
    assert_eq!(snap.tasks[0].input.as_ref(), b"in-20");
    let c = snap.counts[&SessionId(1)];
    assert_eq!((c.pending, c.running, c.succeeded), (2, 0, 1));
    assert!(!snap.counts.contains_key(&SessionId(2)));

    let (closed, counts) = db.get_session(SessionId(2)).unwrap().unwrap();
    assert_eq!((closed.state, counts.pending), (SessionState::Closed, 1));
    // The reset is durable, and the sequence counter carries on after the old tasks.
    db.apply(&[insert(1, [1])]).unwrap();
    let order: Vec<_> = db
        .load()
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.key.task.0)
        .collect();
    assert_eq!(order, [20, 10, 1]);
}

#[test]
fn failed_batch_applies_nothing() {
    let mut db = SqliteStorage::open_in_memory().unwrap();
    db.apply(&[WriteOp::PutSession(session(1, 0)), insert(1, [1])])
        .unwrap();
    // The last op inserts tasks for a session that was never stored: a foreign-key violation
    // that INSERT OR IGNORE does not swallow.
    let err = db
        .apply(&[
            WriteOp::PutSession(session(2, 0)),
            insert(2, 0..100),
            insert(1, [2]),
            finish(1, 1, TaskState::Succeeded, None),
            WriteOp::SetMeta {
                key: "k".into(),
                value: 1,
            },
            insert(77, [1]),
        ])
        .unwrap_err();
    assert!(
        matches!(err, FlameError::Storage(ref m) if m.contains("FOREIGN KEY")),
        "{err}"
    );
    assert_eq!(db.get_session(SessionId(2)).unwrap(), None);
    assert_eq!(db.get_task(key(SessionId(1), TaskId(2))).unwrap(), None);
    let t1 = db.get_task(key(SessionId(1), TaskId(1))).unwrap().unwrap();
    assert_eq!(t1.state, TaskState::Pending);
    assert!(db.load().unwrap().meta.is_empty());
    // The connection is usable again, and the counter did not run ahead.
    db.apply(&[insert(1, [3])]).unwrap();
    assert_eq!(db.load().unwrap().tasks.len(), 2);
}

#[test]
fn task_logs_round_trip_and_an_unknown_task_has_none() {
    let mut db = SqliteStorage::open_in_memory().unwrap();
    let k = |t| key(SessionId(1), TaskId(t));
    db.apply(&[WriteOp::PutSession(session(1, 10)), insert(1, [1, 2])])
        .unwrap();
    db.apply(&[
        finish(1, 1, TaskState::Succeeded, None),
        WriteOp::PutTaskLog {
            key: k(1),
            log: "first attempt\n".into(),
        },
        WriteOp::PutTaskLog {
            key: k(1),
            log: "héllo\nworld\n".into(),
        },
        finish(1, 2, TaskState::Succeeded, None),
    ])
    .unwrap();
    assert_eq!(
        db.get_task_log(k(1)).unwrap().as_deref(),
        Some("héllo\nworld\n"),
        "the last attempt's log replaces an earlier one"
    );
    assert_eq!(db.get_task_log(k(2)).unwrap().as_deref(), Some(""));
    assert_eq!(db.get_task_log(k(3)).unwrap(), None);
    assert_eq!(db.get_task_log(key(SessionId(9), TaskId(1))).unwrap(), None);
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
