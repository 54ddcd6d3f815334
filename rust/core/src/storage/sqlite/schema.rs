//! The on-disk layout of [`super::SqliteStorage`]: connection pragmas, the table definitions,
//! and the migration that brings a file to the current schema version (`PRAGMA user_version`).
//!
//! Ids are `u64` in Rust and `INTEGER` (signed 64-bit) in SQLite: they are stored bit-cast with
//! `as i64` and read back with `as u64`, so ids at or above 2^63 survive unchanged (they merely
//! sort as negative numbers, and nothing orders by id).

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{FlameError, Result};

/// The schema version this build reads and writes. A change to the DDL below bumps it and adds
/// a step to [`migrate`]; a file from a newer build is refused rather than misread.
pub(super) const VERSION: i32 = 7;

/// How long a statement waits for a lock held by another connection (say an operator's
/// `sqlite3` shell) before giving up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per connection, in KiB (a negative `cache_size` is KiB, not pages). Big enough
/// that a 10,000-task batch is assembled in memory before the commit writes it out.
const CACHE_KIB: i64 = 16 * 1024;

/// Largest WAL file kept after a checkpoint, bytes.
const WAL_LIMIT_BYTES: i64 = 64 << 20;

/// The unfinished-task condition, spelled exactly as in the `tasks_unfinished` partial index:
/// SQLite uses a partial index only when the query repeats the index's WHERE term, so every
/// query that wants the index says `unfinished!()`. 1 and 2 are `TaskState::Pending` and
/// `TaskState::Running` (`proto::TaskState`); a test pins that.
macro_rules! unfinished {
    () => {
        "state IN (1, 2)"
    };
}
pub(super) use unfinished;

/// The counter row in `counters` that holds the next `tasks.seq`.
pub(super) const TASK_SEQ: &str = "task_seq";

/// Version 1. Column order matters in `tasks`: the small columns come first so that counting
/// or filtering by state never reads the overflow pages of a large input or output blob.
const V1: &str = concat!(
    "
CREATE TABLE applications (
    name        TEXT PRIMARY KEY NOT NULL,
    spec        BLOB NOT NULL,
    description TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);

-- `id` is chosen by the session manager (it keeps the counter in `meta`); an INTEGER PRIMARY
-- KEY aliases the rowid, but SQLite never picks a value because every insert supplies one.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY NOT NULL,
    application  TEXT NOT NULL,
    app_spec     BLOB NOT NULL,
    common_data  BLOB NOT NULL,
    slots        INTEGER NOT NULL,
    max_retries  INTEGER NOT NULL,
    timeout_secs REAL NOT NULL,
    priority     INTEGER NOT NULL,
    python       TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    created_ms   INTEGER NOT NULL,
    closed_ms    INTEGER
);
CREATE INDEX sessions_recent ON sessions (created_ms, id);

-- Clustered on (session, task): a lookup is one b-tree descent and a session's tasks are
-- contiguous. `seq` records submission order across all sessions (see `counters`).
CREATE TABLE tasks (
    session_id      INTEGER NOT NULL REFERENCES sessions (id),
    task_id         INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    state           INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    finished_ms     INTEGER,
    error_kind      INTEGER,
    error_message   TEXT,
    error_traceback TEXT,
    error_payload   BLOB,
    output          BLOB,
    input           BLOB,
    PRIMARY KEY (session_id, task_id)
) WITHOUT ROWID;
-- Only unfinished tasks, in submission order: what `load` reads. Finished tasks leave the
-- index, so a restart costs O(unfinished), not O(history).
CREATE INDEX tasks_unfinished ON tasks (seq) WHERE ",
    unfinished!(),
    ";

-- The caller's named counters (next session id, ...).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- The engine's own counters, kept apart from `meta` so a caller's key cannot clash with them.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('task_seq', 0);
"
);

/// Version 3: what tasks printed. A table of its own, not a column of `tasks`: most tasks
/// print nothing and get no row, and a log of up to a few MiB never sits in the rows that
/// counting and loading walk. A rowid table (the key is a separate index) because its rows
/// are large, which WITHOUT ROWID tables handle badly.
const V3: &str = "
CREATE TABLE task_logs (
    session_id INTEGER NOT NULL,
    task_id    INTEGER NOT NULL,
    log        TEXT NOT NULL,
    PRIMARY KEY (session_id, task_id)
);
";

/// Version 6: the state's identity, a random UUID made once when the file gets this table.
/// A client remembers it from its first hello; a daemon that answers with another one has
/// lost the state the client's sessions lived in (a fresh or replaced file). One row, always.
const V6: &str = "
CREATE TABLE identity (
    one INTEGER PRIMARY KEY NOT NULL CHECK (one = 1),
    id  TEXT NOT NULL
);
";

/// Undoes versions 3 to 7 of a current file, for tests of the migration from version 2.
#[cfg(test)]
pub(super) const DOWNGRADE_TO_V2: &str = "
DROP INDEX tasks_by_state;
DROP TABLE identity;
DROP TABLE task_logs;
ALTER TABLE sessions DROP COLUMN weight;
ALTER TABLE sessions DROP COLUMN min_executors;
ALTER TABLE sessions DROP COLUMN user;
ALTER TABLE tasks DROP COLUMN started_ms;
ALTER TABLE tasks DROP COLUMN executor_id;
ALTER TABLE tasks DROP COLUMN node_id;
PRAGMA user_version = 2;
";

/// Per-connection settings; must run outside any transaction (`journal_mode` cannot change
/// inside one).
///
/// # Errors
/// `FlameError::Storage` when a pragma is rejected.
pub(super) fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Pages freed by pruning go back to the file system (`PRAGMA incremental_vacuum` after a
    // prune). Takes effect only on a new file (before its first table); an older file keeps
    // its free pages and reuses them for later writes.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    // WAL: a commit is one sequential append and readers never block the writer. SQLite
    // answers with the mode it actually chose: "memory" for an in-memory database, and the old
    // mode when the file system cannot do WAL (some network mounts); both still work.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(
            mode,
            "SQLite refused WAL journal mode; commits will be slower"
        );
    }
    // NORMAL under WAL survives a crash of the process (our failure model); only a power loss
    // can drop the last commits, and never corrupts the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // tasks.session_id references sessions: inserting tasks for an unknown session fails.
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // A checkpoint truncates the WAL back to this size: one large result must not leave a
    // WAL file of its size behind for good.
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
    // apply, load and the getters use about a dozen distinct statements; keep all cached.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Bring the schema to [`VERSION`], atomically: a crash mid-way leaves the old version.
///
/// # Errors
/// `FlameError::Storage` when the file comes from a newer build or the DDL fails.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(FlameError::Storage(format!(
            "database schema version {version} is newer than this build understands \
             ({VERSION}); upgrade Flame or point it at another state file"
        )));
    }
    if version < 1 {
        tx.execute_batch(V1)?;
    }
    if version < 2 {
        // v2: the client that owns a session (closed when that client's lease runs out).
        tx.execute_batch("ALTER TABLE sessions ADD COLUMN owner INTEGER NOT NULL DEFAULT 0;")?;
    }
    if version < 3 {
        tx.execute_batch(V3)?;
    }
    if version < 4 {
        // v4: scheduling options (fair-share weight, executors reserved at open, tenant).
        // The defaults are what a session stored by an older build meant.
        tx.execute_batch(
            "ALTER TABLE sessions ADD COLUMN weight REAL NOT NULL DEFAULT 1.0;
             ALTER TABLE sessions ADD COLUMN min_executors INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE sessions ADD COLUMN user TEXT NOT NULL DEFAULT '';",
        )?;
    }
    if version < 5 {
        // v5: when a task's last attempt started and where it ran, for introspection. Added
        // at the end of the row (after the blobs); only introspection reads them, and a
        // finished task's input is gone by then.
        tx.execute_batch(
            "ALTER TABLE tasks ADD COLUMN started_ms INTEGER;
             ALTER TABLE tasks ADD COLUMN executor_id INTEGER;
             ALTER TABLE tasks ADD COLUMN node_id INTEGER;",
        )?;
    }
    if version < 6 {
        tx.execute_batch(V6)?;
        let id = uuid::Uuid::new_v4().to_string();
        tx.execute("INSERT INTO identity (one, id) VALUES (1, ?1)", [id])?;
    }
    if version < 7 {
        // v7: a session's tasks in one state, in task-id order (the entries end with the
        // primary key), for introspection: a page of failed tasks, or a session's counts by
        // state, walks this small index instead of every row of the session.
        tx.execute_batch("CREATE INDEX tasks_by_state ON tasks (session_id, state);")?;
    }
    // user_version lives in the file header and is written by this same transaction.
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// The state's identity (see [`V6`]).
///
/// # Errors
/// `FlameError::Storage` when the row is missing (a damaged file).
pub(super) fn read_identity(conn: &Connection) -> Result<String> {
    conn.query_row("SELECT id FROM identity WHERE one = 1", [], |r| r.get(0))
        .map_err(|e| cannot_read("the state identity", e))
}

/// The next `tasks.seq` to hand out, persisted by every batch that inserts tasks.
///
/// # Errors
/// `FlameError::Storage` when the counter row is missing (a damaged file).
pub(super) fn read_next_seq(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT value FROM counters WHERE name = ?1",
        [TASK_SEQ],
        |r| r.get(0),
    )
    .map_err(|e| cannot_read("the task sequence counter", e))
}

/// A failed read of a row that must exist; a damaged file stays recognisable as such.
fn cannot_read(what: &str, e: rusqlite::Error) -> FlameError {
    match FlameError::from(e) {
        FlameError::Storage(m) => FlameError::Storage(format!("cannot read {what}: {m}")),
        other => other,
    }
}
