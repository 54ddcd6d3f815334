//! The storage CONFORMANCE suite: the [`Storage`] trait's contract, run against every engine
//! (SQLite on a temp file, PostgreSQL on a throw-away server from `pg_test_server`). Each
//! test is written once against an [`Engine`] and instantiated per engine by
//! `conformance!`; the PostgreSQL instances skip, printing why, when no server can run.
//! Engine-specific behaviour (SQLite's file checks, migrations from old files, query plans)
//! stays in each engine's own tests.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::pg_test_server::PgServer;
use super::sqlite::tests::{finish, insert, session};
use super::{NewTask, StateLocation, StateReader, Storage, WriteOp};
use crate::error::FlameError;
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{key, ApplicationRecord, ErrorKind, SessionState, TaskFailure, TaskState};

/// One engine's state for one test: where it lives, and how to reach under the trait.
pub(crate) enum Engine {
    Sqlite(tempfile::TempDir),
    /// The server is held so it outlives the test's database.
    Postgres {
        _server: Arc<PgServer>,
        url: String,
    },
}

impl Engine {
    pub(crate) fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh database on the shared test server, or `None` (printed) when none can run.
    pub(crate) fn postgres() -> Option<Self> {
        let server = match PgServer::shared() {
            Ok(s) => s,
            Err(why) => {
                eprintln!("skipped: no PostgreSQL test server: {why}");
                return None;
            }
        };
        let url = server.fresh_database().unwrap();
        Some(Self::Postgres {
            _server: server,
            url,
        })
    }

    pub(crate) fn location(&self) -> StateLocation {
        match self {
            Self::Sqlite(dir) => StateLocation::File(dir.path().join("flame.db")),
            Self::Postgres { url, .. } => StateLocation::Postgres(url.clone()),
        }
    }

    /// Open (or reopen: a restart) the engine's storage.
    pub(crate) fn open(&self) -> Box<dyn Storage> {
        self.location().open().unwrap()
    }

    pub(crate) fn reader(&self) -> Box<dyn StateReader> {
        self.location().reader().unwrap()
    }

    /// Run raw SQL (the same text on both engines) to simulate what no op writes.
    fn exec(&self, sql: &str) {
        match self {
            Self::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("flame.db")).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Self::Postgres { url, .. } => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
                c.batch_execute(sql).unwrap();
            }
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite_engine {
            $(#[test] fn $name() { super::$name(super::Engine::sqlite()) })*
        }
        mod postgres_engine {
            $(#[test] fn $name() {
                if let Some(e) = super::Engine::postgres() { super::$name(e) }
            })*
        }
    };
}

conformance!(
    every_op_round_trips,
    resubmitted_tasks_are_ignored,
    reopening_resumes_open_sessions,
    failed_batch_applies_nothing,
    task_logs_round_trip_and_an_unknown_task_has_none,
    ids_above_i64_max_round_trip,
    list_sessions_is_most_recent_first,
    views_and_pages,
    pruning_deletes_only_sessions_closed_before_the_cutoff,
    identity_is_kept_across_reopening,
    text_with_nul_is_stored,
    pending_pages_reach_deep_into_a_large_session,
);

fn every_op_round_trips(engine: Engine) {
    let mut db = engine.open();
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

fn resubmitted_tasks_are_ignored(engine: Engine) {
    let mut db = engine.open();
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

fn reopening_resumes_open_sessions(engine: Engine) {
    {
        let mut db = engine.open();
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
        engine.exec("UPDATE tasks SET state = 2 WHERE task_id = 20");
    }
    let mut db = engine.open();
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

fn failed_batch_applies_nothing(engine: Engine) {
    let mut db = engine.open();
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
        matches!(err, FlameError::Storage(ref m) if m.to_lowercase().contains("foreign key")),
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

fn task_logs_round_trip_and_an_unknown_task_has_none(engine: Engine) {
    let mut db = engine.open();
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

fn ids_above_i64_max_round_trip(engine: Engine) {
    let mut db = engine.open();
    let (s, t) = (u64::MAX - 1, (1u64 << 63) | 42);
    db.apply(&[WriteOp::PutSession(session(s, 0)), insert(s, [t])])
        .unwrap();
    let snap = db.load().unwrap();
    assert_eq!(snap.tasks[0].key, key(SessionId(s), TaskId(t)));
    assert!(db.get_task(key(SessionId(s), TaskId(t))).unwrap().is_some());
}

fn list_sessions_is_most_recent_first(engine: Engine) {
    let mut db = engine.open();
    let ops: Vec<_> = [(1, 30), (2, 10), (3, 20)]
        .into_iter()
        .map(|(id, at)| WriteOp::PutSession(session(id, at)))
        .chain([insert(3, [1, 2])])
        .collect();
    db.apply(&ops).unwrap();
    let got: Vec<_> = db
        .list_sessions(2)
        .unwrap()
        .into_iter()
        .map(|(s, c)| (s.id.0, c.pending))
        .collect();
    assert_eq!(got, [(1, 0), (3, 2)]);
    assert_eq!(db.list_sessions(usize::MAX).unwrap().len(), 3);
}

fn views_and_pages(engine: Engine) {
    let mut db = engine.open();
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
    assert!(db
        .get_task_view(key(SessionId(1), TaskId(99)))
        .unwrap()
        .is_none());

    let ids = |v: Vec<crate::view::TaskView>| v.iter().map(|t| t.key.task.0).collect::<Vec<_>>();
    assert_eq!(
        ids(db.list_task_views(SessionId(1), None, 10, 0).unwrap()),
        [10, 20, 30, 40]
    );
    assert_eq!(
        ids(db.list_task_views(SessionId(1), None, 2, 1).unwrap()),
        [20, 30]
    );
    let pending = db.list_task_views(SessionId(1), Some(TaskState::Pending), 10, 0);
    assert_eq!(ids(pending.unwrap()), [30, 40]);
    let failed = db.list_task_views(SessionId(1), Some(TaskState::Failed), 10, 0);
    assert_eq!(ids(failed.unwrap()), [20]);
    assert!(db
        .list_task_views(SessionId(3), None, 10, 0)
        .unwrap()
        .is_empty());

    // The introspection reader, on a connection of its own, sees the same.
    let mut r = engine.reader();
    assert_eq!(
        r.task_view(key(SessionId(1), TaskId(20)))
            .unwrap()
            .unwrap()
            .state,
        TaskState::Failed
    );
    assert_eq!(
        ids(r.task_views(SessionId(1), None, 2, 1).unwrap()),
        [20, 30]
    );
    let running: HashSet<TaskId> = [TaskId(30)].into();
    assert_eq!(
        ids(r.pending_views(SessionId(1), &running, 10, 0).unwrap()),
        [40]
    );
    let (s, counts) = r.session(SessionId(1)).unwrap().unwrap();
    assert_eq!((s.id, counts.pending, counts.failed), (SessionId(1), 2, 1));
    let live: HashSet<SessionId> = [SessionId(2)].into();
    let listed = r.sessions(10, &live).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|(s, c)| (s.id.0, c.pending))
            .collect::<Vec<_>>(),
        [(2, 0), (1, 2)]
    );
    assert_eq!(
        r.task_log(key(SessionId(1), TaskId(10)))
            .unwrap()
            .as_deref(),
        Some("")
    );
}

fn pruning_deletes_only_sessions_closed_before_the_cutoff(engine: Engine) {
    let mut db = engine.open();
    let mut ops = Vec::new();
    for s in 1..=3 {
        ops.push(WriteOp::PutSession(session(s, 10)));
        ops.push(insert(s, 0..4));
        ops.extend((0..4).map(|t| finish(s, t, TaskState::Succeeded, None)));
        ops.push(WriteOp::PutTaskLog {
            key: key(SessionId(s), TaskId(0)),
            log: "printed".into(),
        });
    }
    ops.push(WriteOp::CloseSession {
        id: SessionId(1),
        closed_ms: 1_000,
    });
    ops.push(WriteOp::CloseSession {
        id: SessionId(2),
        closed_ms: 9_000,
    });
    db.apply(&ops).unwrap();
    db.apply(&[WriteOp::PruneClosed {
        closed_before_ms: 5_000,
    }])
    .unwrap();
    assert_eq!(db.get_session(SessionId(1)).unwrap(), None);
    assert_eq!(db.get_task(key(SessionId(1), TaskId(0))).unwrap(), None);
    assert_eq!(db.get_task_log(key(SessionId(1), TaskId(0))).unwrap(), None);
    for s in [2, 3] {
        let (_, counts) = db.get_session(SessionId(s)).unwrap().unwrap();
        assert_eq!(counts.succeeded, 4, "session {s} was touched");
        let log = db.get_task_log(key(SessionId(s), TaskId(0))).unwrap();
        assert_eq!(log.as_deref(), Some("printed"));
    }
}

fn identity_is_kept_across_reopening(engine: Engine) {
    let first = engine.open().load().unwrap().identity;
    assert_eq!(first.len(), 36, "a UUID: {first}");
    assert_eq!(engine.open().load().unwrap().identity, first);
    let other = match &engine {
        Engine::Sqlite(_) => Engine::sqlite(),
        Engine::Postgres { .. } => Engine::postgres().unwrap(),
    };
    assert_ne!(other.open().load().unwrap().identity, first);
}

/// A NUL in text a user controls (a log, an error message) must not fail the batch: the
/// writer would retry it for ever. PostgreSQL's TEXT cannot hold NUL; it reads back as U+FFFD.
fn text_with_nul_is_stored(engine: Engine) {
    let mut db = engine.open();
    let failure = TaskFailure::new(ErrorKind::ErrorUserException, "bad\0byte");
    db.apply(&[
        WriteOp::PutSession(session(1, 1)),
        insert(1, [1]),
        finish(1, 1, TaskState::Failed, Some(failure)),
        WriteOp::PutTaskLog {
            key: key(SessionId(1), TaskId(1)),
            log: "a\0b".into(),
        },
    ])
    .unwrap();
    let log = db
        .get_task_log(key(SessionId(1), TaskId(1)))
        .unwrap()
        .unwrap();
    assert!(log == "a\0b" || log == "a\u{FFFD}b", "{log:?}");
    let t = db.get_task(key(SessionId(1), TaskId(1))).unwrap().unwrap();
    assert!(t.error.unwrap().message.starts_with("bad"));
}

/// A page of pending tasks past the first thousand, with tasks on executors left out.
fn pending_pages_reach_deep_into_a_large_session(engine: Engine) {
    let mut db = engine.open();
    db.apply(&[WriteOp::PutSession(session(1, 1)), insert(1, 1..=1500)])
        .unwrap();
    let mut r = engine.reader();
    let running: HashSet<TaskId> = (1..=100).map(TaskId).collect();
    let page = r.pending_views(SessionId(1), &running, 3, 1000).unwrap();
    let ids: Vec<u64> = page.iter().map(|t| t.key.task.0).collect();
    assert_eq!(ids, [1101, 1102, 1103]);
    let tail = r.pending_views(SessionId(1), &running, 10, 1398).unwrap();
    assert_eq!(tail.len(), 2, "the last two of 1400 pending");
}
