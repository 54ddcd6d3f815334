//! [`SqliteReader`]: a read-only connection to the state file for introspection (the `flame`
//! CLI, the dashboard, the JSON API), and the introspection queries themselves.
//!
//! Under WAL a reader never blocks the writer and the writer never blocks a reader: each read
//! transaction sees the last commit made before it began. The daemon keeps a few readers beside
//! the writer's connection, so that a slow read (a page deep into a session of a million
//! tasks) costs a reader thread, never a commit. [`super::SqliteStorage`]'s own getters run the
//! same functions, so a read means the same on either connection.
//!
//! Every query walks an index: a session's tasks are a range of the primary key
//! `(session_id, task_id)`, and the tasks of one session in one state a range of
//! `tasks_by_state (session_id, state)` — whose entries end with the primary key, so either
//! range comes out in task-id order with no sort step. A page at `offset` costs O(offset).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{decode, schema, sessions_where};
use crate::error::{FlameError, Result};
use crate::ids::{SessionId, TaskId, TaskKey};
use crate::model::{SessionRecord, TaskCounts, TaskState};
use crate::view::TaskView;

/// How long a read waits on a lock (only a checkpoint that truncates the WAL takes one a
/// reader can meet) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per reader, in KiB: enough for the index pages of a large session.
const CACHE_KIB: i64 = 8 * 1024;

/// A read-only connection to a state file another connection writes.
#[derive(Debug)]
pub struct SqliteReader {
    pub(super) conn: Connection,
}

impl SqliteReader {
    /// Open `path` read-only. The file must exist with the current schema: the writer
    /// ([`super::SqliteStorage::open`]) creates and migrates it first.
    ///
    /// # Errors
    /// `FlameError::Storage` naming the file when it cannot be opened or has another schema
    /// version.
    pub fn open(path: &Path) -> Result<Self> {
        let named = |e: &dyn std::fmt::Display| {
            FlameError::Storage(format!("cannot read state file {}: {e}", path.display()))
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| named(&e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| named(&e))?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(|e| named(&e))?;
        conn.set_prepared_statement_cache_capacity(16);
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| named(&e))?;
        if version != schema::VERSION {
            return Err(named(&format!(
                "schema version {version}, expected {}",
                schema::VERSION
            )));
        }
        Ok(Self { conn })
    }

    /// One task as introspection shows it; `None` if the session has no such task.
    ///
    /// # Errors
    /// `FlameError::Storage` on a failed read or a corrupt row.
    pub fn task_view(&self, key: TaskKey) -> Result<Option<TaskView>> {
        task_view(&self.conn, key)
    }

    /// What a task printed (`""` if nothing); `None` if the session has no such task.
    ///
    /// # Errors
    /// `FlameError::Storage` on a failed read.
    pub fn task_log(&self, key: TaskKey) -> Result<Option<String>> {
        task_log(&self.conn, key)
    }

    /// A session with its task counts as stored.
    ///
    /// # Errors
    /// `FlameError::Storage` on a failed read or a corrupt row.
    pub fn session(&self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>> {
        session(&self.conn, id)
    }

    /// The most recent sessions, at most `limit`, with their stored task counts; the counts
    /// of the sessions in `live` (whose counts the caller knows better) are not read.
    ///
    /// # Errors
    /// `FlameError::Storage` on a failed read or a corrupt row.
    pub fn sessions(
        &self,
        limit: usize,
        live: &HashSet<SessionId>,
    ) -> Result<Vec<(SessionRecord, TaskCounts)>> {
        sessions(&self.conn, limit, live)
    }

    /// A page of a session's tasks in task-id order, only those in `state` if given.
    ///
    /// # Errors
    /// `FlameError::Storage` on a failed read or a corrupt row.
    pub fn task_views(
        &self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        task_views(&self.conn, session, state, limit, offset)
    }

    /// A page of a session's stored-pending tasks in task-id order, leaving out those in
    /// `skip` (the ones memory knows were sent to an executor: running, not pending).
    ///
    /// # Errors
    /// `FlameError::Storage` on a failed read or a corrupt row.
    pub fn pending_views(
        &self,
        session: SessionId,
        skip: &HashSet<TaskId>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        // The filtered page without bounds: rows are skipped here, not by OFFSET.
        let mut stmt = self.conn.prepare_cached(&page_sql(true))?;
        let mut rows = stmt.query(rusqlite::params![
            session.0 as i64,
            TaskState::Pending.as_i32(),
            -1,
            0
        ])?;
        let (mut to_skip, mut out) = (offset, Vec::new());
        while out.len() < limit as usize {
            let Some(row) = rows.next()? else { break };
            let task = TaskId(row.get::<_, i64>(1)? as u64);
            if skip.contains(&task) {
                continue;
            }
            if to_skip > 0 {
                to_skip -= 1;
                continue;
            }
            out.push(decode::task_view(row)?);
        }
        Ok(out)
    }
}

pub(super) fn task_view(conn: &Connection, key: TaskKey) -> Result<Option<TaskView>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM tasks WHERE session_id = ?1 AND task_id = ?2",
        decode::TASK_VIEW_COLS
    ))?;
    let mut rows = stmt.query([key.session.0 as i64, key.task.0 as i64])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode::task_view(row)?)),
        None => Ok(None),
    }
}

pub(super) fn task_log(conn: &Connection, key: TaskKey) -> Result<Option<String>> {
    // Driven by `tasks`, so an unknown task (None) differs from a silent one ("").
    let mut stmt = conn.prepare_cached(
        "SELECT l.log FROM tasks AS t LEFT JOIN task_logs AS l \
         ON l.session_id = t.session_id AND l.task_id = t.task_id \
         WHERE t.session_id = ?1 AND t.task_id = ?2",
    )?;
    let mut rows = stmt.query([key.session.0 as i64, key.task.0 as i64])?;
    match rows.next()? {
        Some(row) => Ok(Some(row.get::<_, Option<String>>(0)?.unwrap_or_default())),
        None => Ok(None),
    }
}

pub(super) fn session(
    conn: &Connection,
    id: SessionId,
) -> Result<Option<(SessionRecord, TaskCounts)>> {
    let found = sessions_where(conn, "id = ?1", [id.0 as i64])?;
    match found.into_iter().next() {
        Some(s) => {
            let counts = decode::counts(conn, s.id)?;
            Ok(Some((s, counts)))
        }
        None => Ok(None),
    }
}

pub(super) fn sessions(
    conn: &Connection,
    limit: usize,
    live: &HashSet<SessionId>,
) -> Result<Vec<(SessionRecord, TaskCounts)>> {
    // `limit` is small in practice; a usize beyond i64 simply means "all".
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let found = sessions_where(
        conn,
        "1 ORDER BY created_ms DESC, id DESC LIMIT ?1",
        [limit],
    )?;
    found
        .into_iter()
        .map(|s| {
            let counts = if live.contains(&s.id) {
                TaskCounts::default()
            } else {
                decode::counts(conn, s.id)?
            };
            Ok((s, counts))
        })
        .collect()
}

/// A page of a session's tasks (`?1`), in one state (`?2`) if `filtered`, then LIMIT and
/// OFFSET. Also what the query-plan tests explain. The filtered page names its index:
/// without statistics (no ANALYZE) SQLite walks the whole session's primary-key range and
/// filters, which for the few failed tasks of a million-task session reads every row.
pub(super) fn page_sql(filtered: bool) -> String {
    let cols = decode::TASK_VIEW_COLS;
    if filtered {
        format!(
            "SELECT {cols} FROM tasks INDEXED BY tasks_by_state \
             WHERE session_id = ?1 AND state = ?2 ORDER BY task_id LIMIT ?3 OFFSET ?4"
        )
    } else {
        format!(
            "SELECT {cols} FROM tasks WHERE session_id = ?1 ORDER BY task_id LIMIT ?2 OFFSET ?3"
        )
    }
}

/// Two statements, not one with `(?2 OR state = ?3)`: a condition that depends on a
/// parameter keeps SQLite from choosing `tasks_by_state` for the filtered page.
pub(super) fn task_views(
    conn: &Connection,
    session: SessionId,
    state: Option<TaskState>,
    limit: u32,
    offset: u64,
) -> Result<Vec<TaskView>> {
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let mut collect = |mut rows: rusqlite::Rows<'_>| -> Result<()> {
        while let Some(row) = rows.next()? {
            out.push(decode::task_view(row)?);
        }
        Ok(())
    };
    let sid = session.0 as i64;
    match state {
        None => {
            let mut stmt = conn.prepare_cached(&page_sql(false))?;
            collect(stmt.query(rusqlite::params![sid, limit, offset])?)?;
        }
        Some(s) => {
            let mut stmt = conn.prepare_cached(&page_sql(true))?;
            collect(stmt.query(rusqlite::params![sid, s.as_i32(), limit, offset])?)?;
        }
    }
    Ok(out)
}

impl crate::storage::StateReader for SqliteReader {
    fn task_view(&mut self, key: TaskKey) -> Result<Option<TaskView>> {
        SqliteReader::task_view(self, key)
    }

    fn task_log(&mut self, key: TaskKey) -> Result<Option<String>> {
        SqliteReader::task_log(self, key)
    }

    fn session(&mut self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>> {
        SqliteReader::session(self, id)
    }

    fn sessions(
        &mut self,
        limit: usize,
        live: &HashSet<SessionId>,
    ) -> Result<Vec<(SessionRecord, TaskCounts)>> {
        SqliteReader::sessions(self, limit, live)
    }

    fn task_views(
        &mut self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        SqliteReader::task_views(self, session, state, limit, offset)
    }

    fn pending_views(
        &mut self,
        session: SessionId,
        skip: &HashSet<TaskId>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        SqliteReader::pending_views(self, session, skip, limit, offset)
    }
}
