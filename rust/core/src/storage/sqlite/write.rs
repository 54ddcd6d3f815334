//! How each [`WriteOp`] becomes SQL. [`apply_op`] runs inside the batch transaction opened by
//! `SqliteStorage::apply`; every statement is a cached prepared statement, so a batch of
//! 10,000 inserts compiles its SQL once (usually not at all) and only binds and steps.

use rusqlite::{params, Connection};

use super::decode::session_state_text;
use super::schema::TASK_SEQ;
use crate::error::Result;
use crate::ids::TaskKey;
use crate::model::{SessionState, TaskState};
use crate::storage::WriteOp;

/// Apply one op. `seq` is the next `tasks.seq`; inserts advance it.
///
/// Updates that match no row (finishing a task or closing a session storage never saw) are
/// logged and skipped rather than failing the batch: the batch carries unrelated work from
/// other sessions, and the in-memory state that produced the op is already authoritative.
///
/// # Errors
/// `FlameError::Storage` when a statement fails, e.g. tasks inserted for a session that was
/// never stored (foreign key). The caller then rolls back the whole batch.
pub(super) fn apply_op(conn: &Connection, op: &WriteOp, seq: &mut i64) -> Result<()> {
    match op {
        WriteOp::PutApplication(app) => {
            conn.prepare_cached(
                "INSERT INTO applications (name, spec, description, created_ms) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, \
                 description = excluded.description, created_ms = excluded.created_ms",
            )?
            .execute(params![
                app.name,
                &app.spec[..],
                app.description,
                app.created_ms
            ])?;
        }
        WriteOp::PutSession(s) => {
            // An upsert, not INSERT OR REPLACE: REPLACE deletes the old row first, which the
            // foreign key from `tasks` forbids once the session has tasks.
            let spec = &s.spec;
            conn.prepare_cached(
                "INSERT INTO sessions (id, application, app_spec, common_data, slots, \
                 max_retries, timeout_secs, priority, python, state, created_ms, closed_ms, \
                 owner, weight, min_executors, user) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                 ON CONFLICT (id) DO UPDATE SET application = excluded.application, \
                 app_spec = excluded.app_spec, common_data = excluded.common_data, \
                 slots = excluded.slots, max_retries = excluded.max_retries, \
                 timeout_secs = excluded.timeout_secs, priority = excluded.priority, \
                 python = excluded.python, state = excluded.state, \
                 created_ms = excluded.created_ms, closed_ms = excluded.closed_ms, \
                 owner = excluded.owner, weight = excluded.weight, \
                 min_executors = excluded.min_executors, user = excluded.user",
            )?
            .execute(params![
                s.id.0 as i64,
                spec.application,
                &spec.app_spec[..],
                &spec.common_data[..],
                spec.slots,
                spec.max_retries,
                spec.timeout_secs,
                spec.priority,
                spec.python,
                session_state_text(s.state),
                s.created_ms,
                s.closed_ms,
                spec.owner,
                spec.weight,
                spec.min_executors,
                spec.user,
            ])?;
        }
        WriteOp::CloseSession { id, closed_ms } => {
            let n = conn
                .prepare_cached("UPDATE sessions SET state = ?2, closed_ms = ?3 WHERE id = ?1")?
                .execute(params![
                    id.0 as i64,
                    session_state_text(SessionState::Closed),
                    closed_ms
                ])?;
            if n == 0 {
                tracing::warn!(session = %id, "storage: closing a session that was never stored");
            }
        }
        WriteOp::InsertTasks {
            session,
            tasks,
            created_ms,
        } => {
            // OR IGNORE makes a resubmitted task id a no-op (the first input wins). It does not
            // cover foreign keys: tasks for an unknown session still fail the batch.
            let mut stmt = conn.prepare_cached(
                "INSERT OR IGNORE INTO tasks \
                 (session_id, task_id, seq, state, attempts, created_ms, input) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
            )?;
            let pending = TaskState::Pending.as_i32();
            for t in tasks {
                stmt.execute(params![
                    session.0 as i64,
                    t.id.0 as i64,
                    *seq,
                    pending,
                    created_ms,
                    &t.input[..]
                ])?;
                // An ignored duplicate leaves a gap in seq; only the order matters.
                *seq += 1;
            }
        }
        WriteOp::SetAttempts { key, attempts } => {
            let n = conn
                .prepare_cached(
                    "UPDATE tasks SET attempts = ?3 WHERE session_id = ?1 AND task_id = ?2",
                )?
                .execute(params![key.session.0 as i64, key.task.0 as i64, attempts])?;
            warn_missing(n, *key, "set attempts of");
        }
        WriteOp::FinishTask {
            key,
            state,
            output,
            error,
            attempts,
            finished_ms,
            started_ms,
            ran_on,
            keep_input,
        } => {
            // The input is dropped only with a final state: a task "finished" into a
            // non-final state (a caller bug) must still be runnable after a restart.
            let n = conn
                .prepare_cached(
                    "UPDATE tasks SET state = ?3, output = ?4, error_kind = ?5, \
                     error_message = ?6, error_traceback = ?7, error_payload = ?8, \
                     attempts = ?9, finished_ms = ?10, \
                     input = CASE WHEN ?11 THEN NULL ELSE input END, \
                     started_ms = ?12, executor_id = ?13, node_id = ?14 \
                     WHERE session_id = ?1 AND task_id = ?2",
                )?
                .execute(params![
                    key.session.0 as i64,
                    key.task.0 as i64,
                    state.as_i32(),
                    &output[..],
                    error.as_ref().map(|e| e.kind as i32),
                    error.as_ref().map(|e| e.message.as_str()),
                    error.as_ref().map(|e| e.traceback.as_str()),
                    error.as_ref().map(|e| &e.payload[..]),
                    attempts,
                    finished_ms,
                    state.is_final() && !keep_input,
                    started_ms,
                    ran_on.map(|(e, _)| e.0 as i64),
                    ran_on.map(|(_, n)| n.0 as i64),
                ])?;
            warn_missing(n, *key, "finish");
        }
        WriteOp::PutTaskLog { key, log } => {
            conn.prepare_cached(
                "INSERT INTO task_logs (session_id, task_id, log) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (session_id, task_id) DO UPDATE SET log = excluded.log",
            )?
            .execute(params![key.session.0 as i64, key.task.0 as i64, log])?;
        }
        WriteOp::DropInput { key } => {
            conn.prepare_cached(
                "UPDATE tasks SET input = NULL \
                 WHERE session_id = ?1 AND task_id = ?2 AND finished_ms IS NOT NULL",
            )?
            .execute(params![key.session.0 as i64, key.task.0 as i64])?;
        }
        WriteOp::PruneClosed { closed_before_ms } => {
            // Logs and tasks first: `tasks` references `sessions`. Each DELETE walks the
            // primary key of one closed session at a time.
            const CLOSED: &str =
                "SELECT id FROM sessions WHERE state = 'closed' AND closed_ms < ?1";
            conn.prepare_cached(&format!(
                "DELETE FROM task_logs WHERE session_id IN ({CLOSED})"
            ))?
            .execute([closed_before_ms])?;
            conn.prepare_cached(&format!("DELETE FROM tasks WHERE session_id IN ({CLOSED})"))?
                .execute([closed_before_ms])?;
            let n = conn
                .prepare_cached("DELETE FROM sessions WHERE state = 'closed' AND closed_ms < ?1")?
                .execute([closed_before_ms])?;
            if n > 0 {
                tracing::info!(
                    sessions = n,
                    "storage: pruned closed sessions past their retention"
                );
            }
        }
        WriteOp::SetMeta { key, value } => {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            // Bit-cast like ids: counters above i64::MAX read back unchanged.
            .execute(params![key, *value as i64])?;
        }
    }
    Ok(())
}

/// Persist the next `tasks.seq`, so submission order survives a restart without ever
/// deriving a number from `MAX(seq)`.
///
/// # Errors
/// `FlameError::Storage` when the update fails.
pub(super) fn store_next_seq(conn: &Connection, seq: i64) -> Result<()> {
    conn.prepare_cached("UPDATE counters SET value = ?2 WHERE name = ?1")?
        .execute(params![TASK_SEQ, seq])?;
    Ok(())
}

fn warn_missing(changed: usize, key: TaskKey, what: &str) {
    if changed == 0 {
        tracing::warn!(task = %key, "storage: cannot {what} a task that was never stored");
    }
}
