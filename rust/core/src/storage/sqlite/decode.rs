//! Turning SQLite rows back into domain records, and the column lists those conversions
//! expect. Everything read here is treated as untrusted: a value that cannot have been written
//! by this engine (an unknown state, a negative attempt count) is reported as a corrupt
//! database through `FlameError::Storage`, never a panic.

use bytes::Bytes;
use rusqlite::{Connection, Row};

use crate::error::{FlameError, Result};
use crate::ids::{ExecutorId, NodeId, SessionId, TaskId, TaskKey};
use crate::model::{
    ApplicationRecord, ErrorKind, SessionRecord, SessionSpec, SessionState, TaskCounts,
    TaskFailure, TaskRecord, TaskState,
};
use crate::view::TaskView;

/// Columns read by [`application`], in order.
pub(super) const APPLICATION_COLS: &str = "name, spec, description, created_ms";

/// Columns read by [`session`], in order.
pub(super) const SESSION_COLS: &str = "id, application, app_spec, common_data, slots, \
     max_retries, timeout_secs, priority, python, state, created_ms, closed_ms, owner, \
     weight, min_executors, user";

/// Columns read by [`task`], in order.
pub(super) const TASK_COLS: &str = "session_id, task_id, state, attempts, created_ms, \
     finished_ms, error_kind, error_message, error_traceback, error_payload, output, input";

/// Columns read by [`task_view`], in order: no blob but the error text.
pub(super) const TASK_VIEW_COLS: &str = "session_id, task_id, state, attempts, created_ms, \
     finished_ms, error_kind, error_message, error_traceback, started_ms, executor_id, \
     node_id, length(output)";

/// How a session state is spelled in `sessions.state`.
pub(super) fn session_state_text(state: SessionState) -> &'static str {
    match state {
        SessionState::Open => "open",
        SessionState::Closed => "closed",
    }
}

fn corrupt(what: String) -> FlameError {
    FlameError::Storage(format!("corrupt database: {what}"))
}

/// A blob column; NULL (a dropped input, a task without output yet) reads as empty.
fn blob(row: &Row<'_>, idx: usize) -> Result<Bytes> {
    let v: Option<Vec<u8>> = row.get(idx)?;
    Ok(v.map(Bytes::from).unwrap_or_default())
}

/// An integer column that must fit a `u32` (counts and limits written from `u32`s).
/// `what` names the value for the error message; it is built only on failure.
fn u32_col(row: &Row<'_>, idx: usize, what: impl FnOnce() -> String) -> Result<u32> {
    let v: i64 = row.get(idx)?;
    u32::try_from(v).map_err(|_| corrupt(format!("{} is {v}, outside 0..=u32::MAX", what())))
}

/// A session's fair-share weight: a finite number above 0, as the spec validation demands.
fn weight_col(row: &Row<'_>, idx: usize, id: SessionId) -> Result<f64> {
    let w: f64 = row.get(idx)?;
    if w.is_finite() && w > 0.0 {
        Ok(w)
    } else {
        Err(corrupt(format!("weight of session {id} is {w}")))
    }
}

/// A `TaskState` stored with `TaskState::as_i32`; `None` if no state has that number.
fn task_state(v: i64) -> Option<TaskState> {
    i32::try_from(v)
        .ok()
        .and_then(|v| TaskState::from_i32(v).ok())
}

/// The key columns `session_id, task_id` at `idx` and `idx + 1`.
fn task_key(row: &Row<'_>, idx: usize) -> Result<TaskKey> {
    Ok(TaskKey {
        session: SessionId(row.get::<_, i64>(idx)? as u64),
        task: TaskId(row.get::<_, i64>(idx + 1)? as u64),
    })
}

pub(super) fn application(row: &Row<'_>) -> Result<ApplicationRecord> {
    Ok(ApplicationRecord {
        name: row.get(0)?,
        spec: blob(row, 1)?,
        description: row.get(2)?,
        created_ms: row.get(3)?,
    })
}

/// A session from a row of [`SESSION_COLS`].
pub(super) fn session(row: &Row<'_>) -> Result<SessionRecord> {
    let id = SessionId(row.get::<_, i64>(0)? as u64);
    let state: String = row.get(9)?;
    let state = match state.as_str() {
        "open" => SessionState::Open,
        "closed" => SessionState::Closed,
        other => return Err(corrupt(format!("session {id} has unknown state '{other}'"))),
    };
    let priority: i64 = row.get(7)?;
    Ok(SessionRecord {
        id,
        spec: SessionSpec {
            application: row.get(1)?,
            app_spec: blob(row, 2)?,
            common_data: blob(row, 3)?,
            slots: u32_col(row, 4, || format!("slots of session {id}"))?,
            max_retries: u32_col(row, 5, || format!("max_retries of session {id}"))?,
            timeout_secs: row.get(6)?,
            priority: i32::try_from(priority)
                .map_err(|_| corrupt(format!("priority of session {id} is {priority}")))?,
            python: row.get(8)?,
            owner: u32_col(row, 12, || format!("owner of session {id}"))?,
            weight: weight_col(row, 13, id)?,
            min_executors: u32_col(row, 14, || format!("min_executors of session {id}"))?,
            user: row.get(15)?,
        },
        state,
        created_ms: row.get(10)?,
        closed_ms: row.get(11)?,
    })
}

/// A task from a row of [`TASK_COLS`].
pub(super) fn task(row: &Row<'_>) -> Result<TaskRecord> {
    let key = task_key(row, 0)?;
    let payload = blob(row, 9)?;
    Ok(TaskRecord {
        key,
        state: state_col(row, key)?,
        error: failure(row, key, payload)?,
        attempts: u32_col(row, 3, || format!("attempts of task {key}"))?,
        created_ms: row.get(4)?,
        finished_ms: row.get(5)?,
        output: blob(row, 10)?,
        input: blob(row, 11)?,
    })
}

/// A task view from a row of [`TASK_VIEW_COLS`].
pub(super) fn task_view(row: &Row<'_>) -> Result<TaskView> {
    let key = task_key(row, 0)?;
    let error = failure(row, key, Bytes::new())?;
    let executor: Option<i64> = row.get(10)?;
    let node: Option<i64> = row.get(11)?;
    let output: Option<i64> = row.get(12)?;
    Ok(TaskView {
        key,
        state: state_col(row, key)?,
        attempts: u32_col(row, 3, || format!("attempts of task {key}"))?,
        created_ms: row.get(4)?,
        finished_ms: row.get(5)?,
        started_ms: row.get(9)?,
        ran_on: executor
            .zip(node)
            .map(|(e, n)| (ExecutorId(e as u64), NodeId(n as u64))),
        error,
        output_bytes: output.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
    })
}

/// The task state in column 2 (both task queries put it there).
fn state_col(row: &Row<'_>, key: TaskKey) -> Result<TaskState> {
    let state: i64 = row.get(2)?;
    task_state(state).ok_or_else(|| corrupt(format!("task {key} has unknown state {state}")))
}

/// The failure in columns 6–8 (kind, message, traceback), if the task has one.
fn failure(row: &Row<'_>, key: TaskKey, payload: Bytes) -> Result<Option<TaskFailure>> {
    let Some(kind) = row.get::<_, Option<i64>>(6)? else {
        return Ok(None);
    };
    Ok(Some(TaskFailure {
        kind: error_kind(key, kind)?,
        message: row.get::<_, Option<String>>(7)?.unwrap_or_default(),
        traceback: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
        payload,
        retryable: false,
    }))
}

fn error_kind(key: TaskKey, kind: i64) -> Result<ErrorKind> {
    i32::try_from(kind)
        .ok()
        .and_then(|k| ErrorKind::try_from(k).ok())
        .ok_or_else(|| corrupt(format!("task {key} has unknown error kind {kind}")))
}

/// A row of `session_id, task_id, attempts, created_ms, input` as a snapshot task: pending
/// again whatever it was, attempts kept, no outcome yet.
pub(super) fn unfinished_task(row: &Row<'_>) -> Result<TaskRecord> {
    let key = task_key(row, 0)?;
    Ok(TaskRecord {
        key,
        state: TaskState::Pending,
        attempts: u32_col(row, 2, || format!("attempts of task {key}"))?,
        created_ms: row.get(3)?,
        input: blob(row, 4)?,
        output: Bytes::new(),
        error: None,
        finished_ms: None,
    })
}

/// Task counts of one session, finished tasks included.
///
/// # Errors
/// `FlameError::Storage` on a read failure or an unknown state.
pub(super) fn counts(conn: &Connection, id: SessionId) -> Result<TaskCounts> {
    let mut stmt = conn
        .prepare_cached("SELECT state, COUNT(*) FROM tasks WHERE session_id = ?1 GROUP BY state")?;
    let mut rows = stmt.query([id.0 as i64])?;
    let mut counts = TaskCounts::default();
    while let Some(row) = rows.next()? {
        add_count(&mut counts, id, row.get(0)?, row.get(1)?)?;
    }
    Ok(counts)
}

/// Add one `(state, COUNT(*))` group to `counts`.
pub(super) fn add_count(counts: &mut TaskCounts, id: SessionId, state: i64, n: i64) -> Result<()> {
    let state = task_state(state)
        .ok_or_else(|| corrupt(format!("a task of session {id} has unknown state {state}")))?;
    // COUNT(*) is never negative; the fallback only keeps the conversion total.
    counts.add(state, u64::try_from(n).unwrap_or(0));
    Ok(())
}
