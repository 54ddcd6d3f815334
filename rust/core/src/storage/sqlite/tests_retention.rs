//! Retention in the engine: `PruneClosed` deletes what sessions closed before the cutoff hold
//! (tasks, results, logs, the session), leaves open and later-closed sessions alone, and gives
//! the freed pages back to the file system.

use bytes::Bytes;

use super::tests::{insert, session};
use super::SqliteStorage;
use crate::ids::{SessionId, TaskId};
use crate::model::{key, TaskState};
use crate::storage::{Storage, WriteOp};

/// Finish `tasks` of session `s` with a 64 KiB result each.
fn big_results(s: u64, tasks: std::ops::Range<u64>) -> Vec<WriteOp> {
    tasks
        .map(|t| WriteOp::FinishTask {
            key: key(SessionId(s), TaskId(t)),
            state: TaskState::Succeeded,
            output: Bytes::from(vec![s as u8; 64 << 10]),
            error: None,
            attempts: 1,
            finished_ms: 200,
            started_ms: None,
            ran_on: None,
            keep_input: false,
        })
        .collect()
}

fn pages(db: &SqliteStorage) -> i64 {
    db.conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn pruning_deletes_only_sessions_closed_before_the_cutoff_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStorage::open(&dir.path().join("flame.db")).unwrap();
    let mut ops = Vec::new();
    for s in 1..=3 {
        ops.push(WriteOp::PutSession(session(s, 10)));
        ops.push(insert(s, 0..32));
        ops.extend(big_results(s, 0..32));
        ops.push(WriteOp::PutTaskLog {
            key: key(SessionId(s), TaskId(0)),
            log: "printed".into(),
        });
    }
    // 1 closed long ago, 2 closed just now, 3 open.
    ops.push(WriteOp::CloseSession {
        id: SessionId(1),
        closed_ms: 1_000,
    });
    ops.push(WriteOp::CloseSession {
        id: SessionId(2),
        closed_ms: 9_000,
    });
    db.apply(&ops).unwrap();
    let before = pages(&db);

    db.apply(&[WriteOp::PruneClosed {
        closed_before_ms: 5_000,
    }])
    .unwrap();

    assert_eq!(db.get_session(SessionId(1)).unwrap(), None);
    assert_eq!(db.get_task(key(SessionId(1), TaskId(0))).unwrap(), None);
    assert_eq!(db.get_task_log(key(SessionId(1), TaskId(0))).unwrap(), None);
    for s in [2, 3] {
        let (_, counts) = db.get_session(SessionId(s)).unwrap().unwrap();
        assert_eq!(counts.succeeded, 32, "session {s} was touched");
        let log = db.get_task_log(key(SessionId(s), TaskId(0))).unwrap();
        assert_eq!(log.as_deref(), Some("printed"));
    }
    // A third of 6 MiB of results is gone from the file, not only marked free.
    let after = pages(&db);
    let freed: i64 = db
        .conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    assert!(before - after > 400, "pages {before} -> {after}");
    assert!(freed < 16, "{freed} pages left on the free list");
}
