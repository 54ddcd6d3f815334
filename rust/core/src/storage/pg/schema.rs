//! The layout of [`super::PgStorage`] in its database and the versioned migration that brings
//! a database to it (the `schema_version` row). Version 1 is the SQLite engine's version 7
//! in PostgreSQL types: every integer is `BIGINT` (ids bit-cast from `u64` as in SQLite), so
//! rows decode the same way on either engine.
//!
//! Several heads may share one database (a standby, #13): the migration takes a transaction
//! advisory lock, so two heads starting at once never both create the tables.

use postgres::Client;

use super::pg_err;
use crate::error::{FlameError, Result};
use crate::model::TaskState;

/// The schema version this build reads and writes; a newer database is refused.
pub(super) const VERSION: i64 = 2;

/// The key of the advisory lock that serialises migrations (any constant; "flame" in ASCII).
const MIGRATION_LOCK: i64 = 0x0066_6c61_6d65;

/// The counter row in `counters` that holds the next `tasks.seq`.
pub(super) const TASK_SEQ: &str = "task_seq";

/// The unfinished-task condition, spelled as in the `tasks_unfinished` partial index.
pub(super) fn unfinished() -> String {
    format!(
        "state IN ({}, {})",
        TaskState::Pending.as_i32(),
        TaskState::Running.as_i32()
    )
}

/// Version 1. `user` is a reserved word in PostgreSQL: the session's tenant is `user_name`.
fn v1() -> String {
    format!(
        "
CREATE TABLE applications (
    name        TEXT PRIMARY KEY,
    spec        BYTEA NOT NULL,
    description TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE sessions (
    id            BIGINT PRIMARY KEY,
    application   TEXT NOT NULL,
    app_spec      BYTEA NOT NULL,
    common_data   BYTEA NOT NULL,
    slots         BIGINT NOT NULL,
    max_retries   BIGINT NOT NULL,
    timeout_secs  DOUBLE PRECISION NOT NULL,
    priority      BIGINT NOT NULL,
    python        TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    created_ms    BIGINT NOT NULL,
    closed_ms     BIGINT,
    owner         BIGINT NOT NULL,
    weight        DOUBLE PRECISION NOT NULL,
    min_executors BIGINT NOT NULL,
    user_name     TEXT NOT NULL
);
CREATE INDEX sessions_recent ON sessions (created_ms, id);
-- Small columns first: counting or filtering by state never reads a large blob (TOAST).
CREATE TABLE tasks (
    session_id      BIGINT NOT NULL REFERENCES sessions (id),
    task_id         BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    state           BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    finished_ms     BIGINT,
    started_ms      BIGINT,
    executor_id     BIGINT,
    node_id         BIGINT,
    error_kind      BIGINT,
    error_message   TEXT,
    error_traceback TEXT,
    error_payload   BYTEA,
    output          BYTEA,
    input           BYTEA,
    PRIMARY KEY (session_id, task_id)
);
-- Only unfinished tasks, in submission order: what `load` reads (O(unfinished) restarts).
CREATE INDEX tasks_unfinished ON tasks (seq) WHERE {unfinished};
-- A session's tasks in one state in task-id order (introspection pages, counts).
CREATE INDEX tasks_by_state ON tasks (session_id, state, task_id);
CREATE TABLE task_logs (
    session_id BIGINT NOT NULL,
    task_id    BIGINT NOT NULL,
    log        TEXT NOT NULL,
    PRIMARY KEY (session_id, task_id)
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('{TASK_SEQ}', 0);
CREATE TABLE identity (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    id  TEXT NOT NULL
);
",
        unfinished = unfinished()
    )
}

/// Bring the database to [`VERSION`] in one transaction (a crash mid-way leaves the old one).
///
/// # Errors
/// `FlameError::Storage` when the database comes from a newer build, holds tables that are
/// not Flame's, or the DDL fails.
pub(super) fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             one     INTEGER PRIMARY KEY CHECK (one = 1),
             version BIGINT NOT NULL
         )",
    )
    .map_err(pg_err)?;
    let version: i64 = tx
        .query_opt("SELECT version FROM schema_version WHERE one = 1", &[])
        .map_err(pg_err)?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if version > VERSION {
        return Err(FlameError::Storage(format!(
            "database schema version {version} is newer than this build understands \
             ({VERSION}); upgrade Flame or point --state-url at another database"
        )));
    }
    if version < 1 {
        // A database with a `tasks` table but no version row is someone else's.
        let foreign: bool = tx
            .query_one("SELECT to_regclass('tasks') IS NOT NULL", &[])
            .map_err(pg_err)?
            .get(0);
        if foreign {
            return Err(FlameError::Storage(
                "the database has a `tasks` table but no Flame schema version; \
                 point --state-url at an empty database"
                    .into(),
            ));
        }
        tx.batch_execute(&v1()).map_err(pg_err)?;
        let id = uuid::Uuid::new_v4().to_string();
        tx.execute("INSERT INTO identity (one, id) VALUES (1, $1)", &[&id])
            .map_err(pg_err)?;
    }
    if version < 2 {
        // v2: the leadership lease of heads sharing the database (`leader.rs`). Born
        // expired, epoch 0: the first head to ask takes it as epoch 1.
        tx.batch_execute(
            "CREATE TABLE leader (
                 one        INTEGER PRIMARY KEY CHECK (one = 1),
                 holder     TEXT NOT NULL,
                 epoch      BIGINT NOT NULL,
                 expires_at TIMESTAMPTZ NOT NULL
             );
             INSERT INTO leader (one, holder, epoch, expires_at)
             VALUES (1, '', 0, '-infinity');",
        )
        .map_err(pg_err)?;
    }
    tx.execute(
        "INSERT INTO schema_version (one, version) VALUES (1, $1) \
         ON CONFLICT (one) DO UPDATE SET version = excluded.version",
        &[&VERSION],
    )
    .map_err(pg_err)?;
    tx.commit().map_err(pg_err)?;
    Ok(())
}

/// The state's identity and the next `tasks.seq`.
///
/// # Errors
/// `FlameError::Storage` when a row that must exist is missing (a damaged database).
pub(super) fn read_identity_and_seq(client: &mut Client) -> Result<(String, i64)> {
    let id = client
        .query_opt("SELECT id FROM identity WHERE one = 1", &[])
        .map_err(pg_err)?
        .ok_or_else(|| FlameError::Storage("cannot read the state identity: no row".into()))?
        .get(0);
    let seq = client
        .query_opt("SELECT value FROM counters WHERE name = $1", &[&TASK_SEQ])
        .map_err(pg_err)?
        .ok_or_else(|| FlameError::Storage("cannot read the task sequence counter: no row".into()))?
        .get(0);
    Ok((id, seq))
}
