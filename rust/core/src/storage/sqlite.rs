//! [`SqliteStorage`]: the [`Storage`] engine on one SQLite file.
//!
//! This file owns the connection and the batch/snapshot logic; the schema and migrations are
//! in `sqlite/schema.rs`, the per-op SQL in `sqlite/write.rs`, row decoding in `sqlite/decode.rs`.
//!
//! One connection, used by one thread (the session manager's writer), so there is no pool and
//! no locking here; introspection reads the same file through read-only [`SqliteReader`]s
//! (`sqlite/reader.rs`), which under WAL never block this connection's commits. Every `apply` is one `IMMEDIATE` transaction: it takes the write lock up
//! front, so it cannot fail half-way with `SQLITE_BUSY` when an outside reader holds a lock.

mod decode;
mod file;
mod reader;
mod schema;
mod write;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_file;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_reader;
#[cfg(test)]
mod tests_retention;
#[cfg(test)]
mod tests_views;

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use self::file::{explain, StateFile};
pub use self::reader::SqliteReader;
use self::schema::unfinished;
use super::{Snapshot, Storage, WriteOp};
use crate::error::{FlameError, Result};
use crate::ids::{SessionId, TaskKey};
use crate::model::{SessionRecord, TaskCounts, TaskRecord, TaskState};
use crate::view::TaskView;

/// Durable storage in SQLite (WAL, `synchronous=NORMAL`: durable against a crash of the
/// process, which is the failure Flame recovers from).
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Connection,
    /// The next `tasks.seq` (submission order). Mirrors the `counters` row, which each batch
    /// that inserts tasks rewrites in the same transaction.
    next_seq: i64,
    /// The state's identity (a UUID made with the file; see `schema.rs`, version 6).
    identity: String,
    /// The file, checked before every commit; `None` in memory.
    file: Option<StateFile>,
    /// The database file, for error messages (empty in memory).
    path: String,
}

impl SqliteStorage {
    /// Open the database at `path`, creating the file and the schema if missing.
    ///
    /// # Errors
    /// `FlameError::Storage` when the file cannot be opened or created, or has a schema
    /// from a newer build; `FlameError::StateFileUnusable`, naming the file and what to do,
    /// when it is damaged or not a SQLite database.
    pub fn open(path: &Path) -> Result<Self> {
        // SQLite would create the file 0644 (its default, whatever the umask); made 0600
        // here first, it also gives its mode to the -wal and -shm files SQLite creates.
        crate::private_files::private_file(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            crate::private_files::tighten_if_exists(Path::new(&side))?;
        }
        let conn = Connection::open(path).map_err(|e| {
            FlameError::Storage(format!("cannot open state file {}: {e}", path.display()))
        })?;
        // SQLite opens lazily: a file that is not a database fails only here, so name it.
        let mut db = Self::init(conn).map_err(|e| match e {
            FlameError::Storage(m) => FlameError::Storage(format!("{}: {m}", path.display())),
            other => explain(Some(path), other),
        })?;
        db.file = Some(StateFile::new(path)?);
        db.path = path.display().to_string();
        Ok(db)
    }

    /// A private in-memory database, gone when dropped. For tests.
    ///
    /// # Errors
    /// `FlameError::Storage` if SQLite cannot allocate the database.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        let next_seq = schema::read_next_seq(&conn)?;
        let identity = schema::read_identity(&conn)?;
        Ok(Self {
            conn,
            next_seq,
            identity,
            file: None,
            path: String::new(),
        })
    }

    /// The state's identity: a random UUID made when the database was created, the same
    /// for as long as this file lives, different for any other file.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(StateFile::path)
    }

    /// Apply ops in one transaction; nothing of them on failure, and nothing at all when
    /// the file is no longer the one opened.
    fn apply_ops<'a>(&mut self, ops: impl Iterator<Item = &'a WriteOp>) -> Result<()> {
        let mut ops = ops.peekable();
        if ops.peek().is_none() {
            return Ok(());
        }
        if let Some(file) = &self.file {
            file.check()?;
        }
        let r = self.commit_ops(ops);
        r.map_err(|e| explain(self.path(), e))
    }

    fn commit_ops<'a>(&mut self, ops: impl Iterator<Item = &'a WriteOp>) -> Result<()> {
        // Dropping `tx` on any error rolls the whole batch back.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seq = self.next_seq;
        let mut pruned = false;
        for op in ops {
            write::apply_op(&tx, op, &mut seq)?;
            pruned |= matches!(op, WriteOp::PruneClosed { .. });
        }
        if seq != self.next_seq {
            write::store_next_seq(&tx, seq)?;
        }
        tx.commit()?;
        // Only after the commit, so memory never runs ahead of the file.
        self.next_seq = seq;
        if pruned {
            // Give the pages of what was pruned back to the file system (a no-op on files
            // made without incremental auto-vacuum: there they are reused by later writes).
            // Failing here loses nothing: the pages stay free for reuse.
            if let Err(e) = self.reclaim_free_pages() {
                tracing::warn!(error = %e, "storage: incremental vacuum failed");
            }
        }
        Ok(())
    }
}

/// On close, fold the WAL into the file and truncate it. SQLite does this itself only when
/// the last connection closes, and the last may be a read-only introspection reader, which
/// cannot: the WAL (and pages a prune freed, which shrink the file only at a checkpoint)
/// would stay behind until the next start.
impl Drop for SqliteStorage {
    fn drop(&mut self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "storage: final checkpoint failed");
        }
    }
}

impl SqliteStorage {
    /// Truncate the file by its free pages. The pragma frees one page per step, so it is
    /// stepped to the end (`execute_batch` would step it once).
    fn reclaim_free_pages(&mut self) -> Result<()> {
        let mut stmt = self.conn.prepare_cached("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        Ok(())
    }
}

impl Storage for SqliteStorage {
    fn location(&self) -> String {
        if self.path.is_empty() {
            "in-memory state".into()
        } else {
            format!("state file {}", self.path)
        }
    }

    /// Also rewrites every `running` row to `pending`: after a restart nothing is running,
    /// and the rows then agree with the snapshot and with later `get_session` counts.
    fn load(&mut self) -> Result<Snapshot> {
        let mut snap = load_snapshot(&mut self.conn).map_err(|e| explain(self.path(), e))?;
        snap.identity = self.identity.clone();
        Ok(snap)
    }

    fn apply(&mut self, ops: &[WriteOp]) -> Result<()> {
        self.apply_ops(ops.iter())
    }

    fn apply_all(&mut self, batches: &[Vec<WriteOp>]) -> Result<()> {
        self.apply_ops(batches.iter().flatten())
    }
    /// A finished task comes back without its input (dropped when it finished).
    fn get_task(&mut self, key: TaskKey) -> Result<Option<TaskRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM tasks WHERE session_id = ?1 AND task_id = ?2",
            decode::TASK_COLS
        ))?;
        let mut rows = stmt.query([key.session.0 as i64, key.task.0 as i64])?;
        match rows.next()? {
            Some(row) => Ok(Some(decode::task(row)?)),
            None => Ok(None),
        }
    }

    fn get_task_log(&mut self, key: TaskKey) -> Result<Option<String>> {
        reader::task_log(&self.conn, key)
    }

    fn get_session(&mut self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>> {
        reader::session(&self.conn, id)
    }

    fn list_sessions(&mut self, limit: usize) -> Result<Vec<(SessionRecord, TaskCounts)>> {
        reader::sessions(&self.conn, limit, &Default::default())
    }

    fn get_task_view(&mut self, key: TaskKey) -> Result<Option<TaskView>> {
        reader::task_view(&self.conn, key)
    }

    /// Walks an index range in task-id order (no sort step); see `sqlite/reader.rs`.
    fn list_task_views(
        &mut self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        reader::task_views(&self.conn, session, state, limit, offset)
    }
}

/// Sessions matching `filter` (the SQL after `WHERE`; a fixed string, never user input).
fn sessions_where<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    params: P,
) -> Result<Vec<SessionRecord>> {
    let sql = format!(
        "SELECT {} FROM sessions WHERE {filter}",
        decode::SESSION_COLS
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode::session(row)?);
    }
    Ok(out)
}

/// Everything `load` returns but the identity, in one transaction (the reset of running
/// tasks and every read see the same state).
fn load_snapshot(conn: &mut Connection) -> Result<Snapshot> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let pending = TaskState::Pending.as_i32();
    // Repeats the partial index's condition so the update walks the index, not the table.
    tx.prepare_cached(concat!(
        "UPDATE tasks SET state = ?1 WHERE ",
        unfinished!(),
        " AND state = ?2"
    ))?
    .execute([pending, TaskState::Running.as_i32()])?;

    let mut snap = Snapshot::default();
    {
        let sql = format!(
            "SELECT {} FROM applications ORDER BY name",
            decode::APPLICATION_COLS
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            snap.applications.push(decode::application(row)?);
        }
    }
    snap.sessions = sessions_where(&tx, "state = 'open' ORDER BY id", [])?;
    for s in &snap.sessions {
        snap.counts.insert(s.id, TaskCounts::default());
    }
    {
        // CROSS JOIN fixes open sessions as the outer loop, each a range of the tasks
        // primary key; without it SQLite may scan every task ever stored.
        let mut stmt = tx.prepare_cached(
            "SELECT t.session_id, t.state, COUNT(*) \
                 FROM sessions AS s CROSS JOIN tasks AS t ON t.session_id = s.id \
                 WHERE s.state = 'open' GROUP BY t.session_id, t.state",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id = SessionId(row.get::<_, i64>(0)? as u64);
            let counts = snap.counts.entry(id).or_default();
            decode::add_count(counts, id, row.get(1)?, row.get(2)?)?;
        }
    }
    {
        // CROSS JOIN fixes tasks as the outer loop, so rows come straight out of the
        // `tasks_unfinished` index in seq order with no sort step.
        let mut stmt = tx.prepare_cached(concat!(
            "SELECT t.session_id, t.task_id, t.attempts, t.created_ms, t.input \
                 FROM tasks AS t CROSS JOIN sessions AS s ON s.id = t.session_id \
                 WHERE t.",
            unfinished!(),
            " AND s.state = 'open' ORDER BY t.seq"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            snap.tasks.push(decode::unfinished_task(row)?);
        }
    }
    {
        let mut stmt = tx.prepare_cached("SELECT key, value FROM meta")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            snap.meta.insert(row.get(0)?, row.get::<_, i64>(1)? as u64);
        }
    }
    tx.commit()?;
    Ok(snap)
}
