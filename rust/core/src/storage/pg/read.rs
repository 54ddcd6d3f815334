//! Reads of the PostgreSQL engine: rows back into domain records (treated as untrusted: a
//! value this engine cannot have written is a corrupt database, never a panic), the getters
//! of [`super::PgStorage`] and the introspection reader [`PgReader`]. Both run the same
//! functions on any `GenericClient` (a connection or a transaction), so a read means the
//! same everywhere. Column lists match the SQLite engine's.

use std::collections::HashSet;

use bytes::Bytes;
use postgres::types::FromSql;
use postgres::{GenericClient, Row};

use super::{connect, pg_err};
use crate::error::{FlameError, Result};
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId, TaskKey};
use crate::model::{
    ApplicationRecord, ErrorKind, SessionRecord, SessionSpec, SessionState, TaskCounts,
    TaskFailure, TaskRecord, TaskState,
};
use crate::storage::StateReader;
use crate::view::TaskView;

pub(super) const APPLICATION_COLS: &str = "name, spec, description, created_ms";
pub(super) const SESSION_COLS: &str = "id, application, app_spec, common_data, slots, \
     max_retries, timeout_secs, priority, python, state, created_ms, closed_ms, owner, \
     weight, min_executors, user_name";
const TASK_COLS: &str = "session_id, task_id, state, attempts, created_ms, \
     finished_ms, error_kind, error_message, error_traceback, error_payload, output, input";
const TASK_VIEW_COLS: &str = "session_id, task_id, state, attempts, created_ms, \
     finished_ms, error_kind, error_message, error_traceback, started_ms, executor_id, \
     node_id, octet_length(output)::BIGINT";

fn corrupt(what: String) -> FlameError {
    FlameError::Storage(format!("corrupt database: {what}"))
}

/// Column `idx` as `T`; a type mismatch is a corrupt database, not a panic.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

fn blob(row: &Row, idx: usize) -> Result<Bytes> {
    let v: Option<Vec<u8>> = col(row, idx)?;
    Ok(v.map(Bytes::from).unwrap_or_default())
}

fn u32_col(row: &Row, idx: usize, what: impl FnOnce() -> String) -> Result<u32> {
    let v: i64 = col(row, idx)?;
    u32::try_from(v).map_err(|_| corrupt(format!("{} is {v}, outside 0..=u32::MAX", what())))
}

fn task_state(v: i64) -> Option<TaskState> {
    i32::try_from(v)
        .ok()
        .and_then(|v| TaskState::from_i32(v).ok())
}

fn task_key(row: &Row, idx: usize) -> Result<TaskKey> {
    Ok(TaskKey {
        session: SessionId(col::<i64>(row, idx)? as u64),
        task: TaskId(col::<i64>(row, idx + 1)? as u64),
    })
}

pub(super) fn application(row: &Row) -> Result<ApplicationRecord> {
    Ok(ApplicationRecord {
        name: col(row, 0)?,
        spec: blob(row, 1)?,
        description: col(row, 2)?,
        created_ms: col(row, 3)?,
    })
}

pub(super) fn session(row: &Row) -> Result<SessionRecord> {
    let id = SessionId(col::<i64>(row, 0)? as u64);
    let state = match col::<&str>(row, 9)? {
        "open" => SessionState::Open,
        "closed" => SessionState::Closed,
        other => return Err(corrupt(format!("session {id} has unknown state '{other}'"))),
    };
    let priority: i64 = col(row, 7)?;
    let weight: f64 = col(row, 13)?;
    if !(weight.is_finite() && weight > 0.0) {
        return Err(corrupt(format!("weight of session {id} is {weight}")));
    }
    Ok(SessionRecord {
        id,
        spec: SessionSpec {
            application: col(row, 1)?,
            app_spec: blob(row, 2)?,
            common_data: blob(row, 3)?,
            slots: u32_col(row, 4, || format!("slots of session {id}"))?,
            max_retries: u32_col(row, 5, || format!("max_retries of session {id}"))?,
            timeout_secs: col(row, 6)?,
            priority: i32::try_from(priority)
                .map_err(|_| corrupt(format!("priority of session {id} is {priority}")))?,
            python: col(row, 8)?,
            owner: u32_col(row, 12, || format!("owner of session {id}"))?,
            weight,
            min_executors: u32_col(row, 14, || format!("min_executors of session {id}"))?,
            user: col(row, 15)?,
        },
        state,
        created_ms: col(row, 10)?,
        closed_ms: col(row, 11)?,
    })
}

fn state_col(row: &Row, key: TaskKey) -> Result<TaskState> {
    let state: i64 = col(row, 2)?;
    task_state(state).ok_or_else(|| corrupt(format!("task {key} has unknown state {state}")))
}

fn failure(row: &Row, key: TaskKey, payload: Bytes) -> Result<Option<TaskFailure>> {
    let Some(kind) = col::<Option<i64>>(row, 6)? else {
        return Ok(None);
    };
    let kind = i32::try_from(kind)
        .ok()
        .and_then(|k| ErrorKind::try_from(k).ok())
        .ok_or_else(|| corrupt(format!("task {key} has unknown error kind {kind}")))?;
    Ok(Some(TaskFailure {
        kind,
        message: col::<Option<String>>(row, 7)?.unwrap_or_default(),
        traceback: col::<Option<String>>(row, 8)?.unwrap_or_default(),
        payload,
        retryable: false,
    }))
}

fn task(row: &Row) -> Result<TaskRecord> {
    let key = task_key(row, 0)?;
    Ok(TaskRecord {
        key,
        state: state_col(row, key)?,
        error: failure(row, key, blob(row, 9)?)?,
        attempts: u32_col(row, 3, || format!("attempts of task {key}"))?,
        created_ms: col(row, 4)?,
        finished_ms: col(row, 5)?,
        output: blob(row, 10)?,
        input: blob(row, 11)?,
    })
}

fn task_view(row: &Row) -> Result<TaskView> {
    let key = task_key(row, 0)?;
    let executor: Option<i64> = col(row, 10)?;
    let node: Option<i64> = col(row, 11)?;
    let output: Option<i64> = col(row, 12)?;
    Ok(TaskView {
        key,
        state: state_col(row, key)?,
        attempts: u32_col(row, 3, || format!("attempts of task {key}"))?,
        created_ms: col(row, 4)?,
        finished_ms: col(row, 5)?,
        started_ms: col(row, 9)?,
        ran_on: executor
            .zip(node)
            .map(|(e, n)| (ExecutorId(e as u64), NodeId(n as u64))),
        error: failure(row, key, Bytes::new())?,
        output_bytes: output.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
    })
}

/// A snapshot task from `session_id, task_id, attempts, created_ms, input`: pending again.
pub(super) fn unfinished_task(row: &Row) -> Result<TaskRecord> {
    let key = task_key(row, 0)?;
    Ok(TaskRecord {
        key,
        state: TaskState::Pending,
        attempts: u32_col(row, 2, || format!("attempts of task {key}"))?,
        created_ms: col(row, 3)?,
        input: blob(row, 4)?,
        output: Bytes::new(),
        error: None,
        finished_ms: None,
    })
}

/// Add one `(session_id, state, count)` row to `counts`.
pub(super) fn add_count(counts: &mut TaskCounts, id: SessionId, row: &Row) -> Result<()> {
    let state: i64 = col(row, 1)?;
    let n: i64 = col(row, 2)?;
    let state = task_state(state)
        .ok_or_else(|| corrupt(format!("a task of session {id} has unknown state {state}")))?;
    counts.add(state, u64::try_from(n).unwrap_or(0));
    Ok(())
}

pub(super) fn get_task(c: &mut impl GenericClient, key: TaskKey) -> Result<Option<TaskRecord>> {
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE session_id = $1 AND task_id = $2");
    let row = c.query_opt(&sql, &[&(key.session.0 as i64), &(key.task.0 as i64)]);
    row.map_err(pg_err)?.as_ref().map(task).transpose()
}

pub(super) fn get_task_view(c: &mut impl GenericClient, key: TaskKey) -> Result<Option<TaskView>> {
    let sql = format!("SELECT {TASK_VIEW_COLS} FROM tasks WHERE session_id = $1 AND task_id = $2");
    let row = c.query_opt(&sql, &[&(key.session.0 as i64), &(key.task.0 as i64)]);
    row.map_err(pg_err)?.as_ref().map(task_view).transpose()
}

pub(super) fn task_log(c: &mut impl GenericClient, key: TaskKey) -> Result<Option<String>> {
    let row = c
        .query_opt(
            "SELECT l.log FROM tasks AS t LEFT JOIN task_logs AS l \
             ON l.session_id = t.session_id AND l.task_id = t.task_id \
             WHERE t.session_id = $1 AND t.task_id = $2",
            &[&(key.session.0 as i64), &(key.task.0 as i64)],
        )
        .map_err(pg_err)?;
    row.map(|r| Ok(col::<Option<String>>(&r, 0)?.unwrap_or_default()))
        .transpose()
}

fn counts(c: &mut impl GenericClient, id: SessionId) -> Result<TaskCounts> {
    let rows = c
        .query(
            "SELECT session_id, state, COUNT(*) FROM tasks WHERE session_id = $1 \
             GROUP BY session_id, state",
            &[&(id.0 as i64)],
        )
        .map_err(pg_err)?;
    let mut out = TaskCounts::default();
    for r in &rows {
        add_count(&mut out, id, r)?;
    }
    Ok(out)
}

pub(super) fn get_session(
    c: &mut impl GenericClient,
    id: SessionId,
) -> Result<Option<(SessionRecord, TaskCounts)>> {
    let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1");
    let Some(row) = c.query_opt(&sql, &[&(id.0 as i64)]).map_err(pg_err)? else {
        return Ok(None);
    };
    let s = session(&row)?;
    let n = counts(c, s.id)?;
    Ok(Some((s, n)))
}

pub(super) fn list_sessions(
    c: &mut impl GenericClient,
    limit: usize,
    live: &HashSet<SessionId>,
) -> Result<Vec<(SessionRecord, TaskCounts)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql =
        format!("SELECT {SESSION_COLS} FROM sessions ORDER BY created_ms DESC, id DESC LIMIT $1");
    let rows = c.query(&sql, &[&limit]).map_err(pg_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let s = session(r)?;
        let n = if live.contains(&s.id) {
            TaskCounts::default()
        } else {
            counts(c, s.id)?
        };
        out.push((s, n));
    }
    Ok(out)
}

pub(super) fn list_task_views(
    c: &mut impl GenericClient,
    session: SessionId,
    state: Option<TaskState>,
    limit: u32,
    offset: u64,
) -> Result<Vec<TaskView>> {
    let sid = session.0 as i64;
    let (limit, offset) = (i64::from(limit), i64::try_from(offset).unwrap_or(i64::MAX));
    let rows = match state {
        None => c.query(
            &format!(
                "SELECT {TASK_VIEW_COLS} FROM tasks WHERE session_id = $1 \
                 ORDER BY task_id LIMIT $2 OFFSET $3"
            ),
            &[&sid, &limit, &offset],
        ),
        Some(s) => c.query(
            &format!(
                "SELECT {TASK_VIEW_COLS} FROM tasks WHERE session_id = $1 AND state = $2 \
                 ORDER BY task_id LIMIT $3 OFFSET $4"
            ),
            &[&sid, &i64::from(s.as_i32()), &limit, &offset],
        ),
    }
    .map_err(pg_err)?;
    rows.iter().map(task_view).collect()
}

/// A read-only connection for introspection (the dashboard, the CLI, the JSON API).
pub struct PgReader {
    client: super::PgClient,
}

impl PgReader {
    /// Connect to the database at `url`, whose schema the writer has already made.
    ///
    /// # Errors
    /// `FlameError::Storage` naming the server when it cannot be reached.
    pub fn open(url: &str) -> Result<Self> {
        let (client, _) = connect(url)?;
        Ok(Self { client })
    }
}

impl StateReader for PgReader {
    fn task_view(&mut self, key: TaskKey) -> Result<Option<TaskView>> {
        get_task_view(&mut *self.client, key)
    }

    fn task_log(&mut self, key: TaskKey) -> Result<Option<String>> {
        task_log(&mut *self.client, key)
    }

    fn session(&mut self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>> {
        get_session(&mut *self.client, id)
    }

    fn sessions(
        &mut self,
        limit: usize,
        live: &HashSet<SessionId>,
    ) -> Result<Vec<(SessionRecord, TaskCounts)>> {
        list_sessions(&mut *self.client, limit, live)
    }

    fn task_views(
        &mut self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        list_task_views(&mut *self.client, session, state, limit, offset)
    }

    /// Rows skipped here, not by OFFSET (see the SQLite reader's twin); read through a
    /// portal in chunks, so a page near the start of a session of a million pending tasks
    /// does not fetch them all.
    fn pending_views(
        &mut self,
        session: SessionId,
        skip: &HashSet<TaskId>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        const CHUNK: i32 = 512;
        let mut tx = self.client.transaction().map_err(pg_err)?;
        let sql = format!(
            "SELECT {TASK_VIEW_COLS} FROM tasks WHERE session_id = $1 AND state = $2 \
             ORDER BY task_id"
        );
        let pending = i64::from(TaskState::Pending.as_i32());
        let portal = tx
            .bind(&sql, &[&(session.0 as i64), &pending])
            .map_err(pg_err)?;
        let (mut to_skip, mut out) = (offset, Vec::new());
        'chunks: loop {
            let rows = tx.query_portal(&portal, CHUNK).map_err(pg_err)?;
            for row in &rows {
                if out.len() >= limit as usize {
                    break 'chunks;
                }
                let task = TaskId(col::<i64>(row, 1)? as u64);
                if skip.contains(&task) {
                    continue;
                }
                if to_skip > 0 {
                    to_skip -= 1;
                    continue;
                }
                out.push(task_view(row)?);
            }
            if rows.len() < CHUNK as usize {
                break;
            }
        }
        drop(portal);
        tx.commit().map_err(pg_err)?;
        Ok(out)
    }
}
