//! How a batch of [`WriteOp`]s becomes SQL on PostgreSQL, inside the one transaction of a
//! group commit. A round trip per row would cap throughput at the network's latency, so
//! the per-task ops are set-based: a run of consecutive `InsertTasks` is one multi-row
//! `INSERT ... SELECT FROM unnest(arrays)`, and a run of consecutive `FinishTask`s one
//! `UPDATE ... FROM unnest(arrays)`. Runs keep the batch's order; a run also ends where a
//! task repeats in it, so two finishes of one task still apply in order. The rarer ops
//! (sessions, applications, meta, logs, pruning) are one statement each.
//!
//! PostgreSQL's TEXT cannot hold a NUL character, which SQLite stores fine: text a user
//! controls (logs, error messages, names) is written with NUL replaced by U+FFFD, rather
//! than failing the whole batch (which the writer would retry for ever).

use std::borrow::Cow;
use std::collections::HashSet;

use postgres::Transaction;

use super::pg_err;
use super::schema::TASK_SEQ;
use crate::error::Result;
use crate::ids::TaskKey;
use crate::model::{SessionState, TaskState};
use crate::storage::WriteOp;

/// Text as PostgreSQL can store it (NUL replaced).
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn state_text(s: SessionState) -> &'static str {
    match s {
        SessionState::Open => "open",
        SessionState::Closed => "closed",
    }
}

/// Apply `ops` in order; `seq` is the next `tasks.seq` (inserts advance it).
///
/// # Errors
/// `FlameError::Storage` when a statement fails (the caller rolls the batch back).
pub(super) fn apply_ops<'a>(
    tx: &mut Transaction<'_>,
    ops: impl Iterator<Item = &'a WriteOp>,
    seq: &mut i64,
) -> Result<()> {
    let mut inserts = Inserts::default();
    let mut finishes = Finishes::default();
    for op in ops {
        match op {
            WriteOp::InsertTasks { .. } => finishes.flush(tx)?,
            WriteOp::FinishTask { key, .. } => {
                inserts.flush(tx)?;
                if finishes.keys.contains(key) {
                    finishes.flush(tx)?;
                }
            }
            _ => {
                inserts.flush(tx)?;
                finishes.flush(tx)?;
            }
        }
        apply_one(tx, op, seq, &mut inserts, &mut finishes)?;
    }
    inserts.flush(tx)?;
    finishes.flush(tx)?;
    Ok(())
}

fn apply_one(
    tx: &mut Transaction<'_>,
    op: &WriteOp,
    seq: &mut i64,
    inserts: &mut Inserts,
    finishes: &mut Finishes,
) -> Result<()> {
    match op {
        WriteOp::InsertTasks {
            session,
            tasks,
            created_ms,
        } => {
            for t in tasks {
                inserts.sid.push(session.0 as i64);
                inserts.tid.push(t.id.0 as i64);
                inserts.seq.push(*seq);
                inserts.created.push(*created_ms);
                inserts.input.push(t.input.to_vec());
                *seq += 1;
            }
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
            let f = finishes;
            f.keys.insert(*key);
            f.sid.push(key.session.0 as i64);
            f.tid.push(key.task.0 as i64);
            f.state.push(i64::from(state.as_i32()));
            f.output.push(output.to_vec());
            f.ekind.push(error.as_ref().map(|e| e.kind as i64));
            f.emsg
                .push(error.as_ref().map(|e| text(&e.message).into_owned()));
            f.etb
                .push(error.as_ref().map(|e| text(&e.traceback).into_owned()));
            f.epay.push(error.as_ref().map(|e| e.payload.to_vec()));
            f.attempts.push(i64::from(*attempts));
            f.finished.push(*finished_ms);
            f.drop_input.push(state.is_final() && !keep_input);
            f.started.push(*started_ms);
            f.exec.push(ran_on.map(|(e, _)| e.0 as i64));
            f.node.push(ran_on.map(|(_, n)| n.0 as i64));
        }
        WriteOp::PutApplication(app) => {
            tx.execute(
                "INSERT INTO applications (name, spec, description, created_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
                 spec = excluded.spec, description = excluded.description, \
                 created_ms = excluded.created_ms",
                &[
                    &text(&app.name),
                    &&app.spec[..],
                    &text(&app.description),
                    &app.created_ms,
                ],
            )
            .map_err(pg_err)?;
        }
        WriteOp::PutSession(s) => {
            let spec = &s.spec;
            tx.execute(
                "INSERT INTO sessions (id, application, app_spec, common_data, slots, \
                 max_retries, timeout_secs, priority, python, state, created_ms, closed_ms, \
                 owner, weight, min_executors, user_name) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (id) DO UPDATE SET application = excluded.application, \
                 app_spec = excluded.app_spec, common_data = excluded.common_data, \
                 slots = excluded.slots, max_retries = excluded.max_retries, \
                 timeout_secs = excluded.timeout_secs, priority = excluded.priority, \
                 python = excluded.python, state = excluded.state, \
                 created_ms = excluded.created_ms, closed_ms = excluded.closed_ms, \
                 owner = excluded.owner, weight = excluded.weight, \
                 min_executors = excluded.min_executors, user_name = excluded.user_name",
                &[
                    &(s.id.0 as i64),
                    &text(&spec.application),
                    &&spec.app_spec[..],
                    &&spec.common_data[..],
                    &i64::from(spec.slots),
                    &i64::from(spec.max_retries),
                    &spec.timeout_secs,
                    &i64::from(spec.priority),
                    &text(&spec.python),
                    &state_text(s.state),
                    &s.created_ms,
                    &s.closed_ms,
                    &i64::from(spec.owner),
                    &spec.weight,
                    &i64::from(spec.min_executors),
                    &text(&spec.user),
                ],
            )
            .map_err(pg_err)?;
        }
        WriteOp::CloseSession { id, closed_ms } => {
            let n = tx
                .execute(
                    "UPDATE sessions SET state = $2, closed_ms = $3 WHERE id = $1",
                    &[&(id.0 as i64), &state_text(SessionState::Closed), closed_ms],
                )
                .map_err(pg_err)?;
            if n == 0 {
                tracing::warn!(session = %id, "storage: closing a session that was never stored");
            }
        }
        WriteOp::SetAttempts { key, attempts } => {
            let n = tx
                .execute(
                    "UPDATE tasks SET attempts = $3 WHERE session_id = $1 AND task_id = $2",
                    &[
                        &(key.session.0 as i64),
                        &(key.task.0 as i64),
                        &i64::from(*attempts),
                    ],
                )
                .map_err(pg_err)?;
            if n == 0 {
                tracing::warn!(task = %key, "storage: cannot set attempts of a task that was never stored");
            }
        }
        WriteOp::PutTaskLog { key, log } => {
            tx.execute(
                "INSERT INTO task_logs (session_id, task_id, log) VALUES ($1, $2, $3) \
                 ON CONFLICT (session_id, task_id) DO UPDATE SET log = excluded.log",
                &[&(key.session.0 as i64), &(key.task.0 as i64), &text(log)],
            )
            .map_err(pg_err)?;
        }
        WriteOp::DropInput { key } => {
            tx.execute(
                "UPDATE tasks SET input = NULL \
                 WHERE session_id = $1 AND task_id = $2 AND finished_ms IS NOT NULL",
                &[&(key.session.0 as i64), &(key.task.0 as i64)],
            )
            .map_err(pg_err)?;
        }
        WriteOp::PruneClosed { closed_before_ms } => {
            const CLOSED: &str =
                "SELECT id FROM sessions WHERE state = 'closed' AND closed_ms < $1";
            for table in ["task_logs", "tasks"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE session_id IN ({CLOSED})"),
                    &[closed_before_ms],
                )
                .map_err(pg_err)?;
            }
            let n = tx
                .execute(
                    "DELETE FROM sessions WHERE state = 'closed' AND closed_ms < $1",
                    &[closed_before_ms],
                )
                .map_err(pg_err)?;
            if n > 0 {
                tracing::info!(
                    sessions = n,
                    "storage: pruned closed sessions past their retention"
                );
            }
        }
        WriteOp::SetMeta { key, value } => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&text(key), &(*value as i64)],
            )
            .map_err(pg_err)?;
        }
    }
    Ok(())
}

/// Persist the next `tasks.seq` in the batch's transaction.
pub(super) fn store_next_seq(tx: &mut Transaction<'_>, seq: i64) -> Result<()> {
    tx.execute(
        "UPDATE counters SET value = $2 WHERE name = $1",
        &[&TASK_SEQ, &seq],
    )
    .map_err(pg_err)?;
    Ok(())
}

/// A run of task inserts, column by column.
#[derive(Default)]
struct Inserts {
    sid: Vec<i64>,
    tid: Vec<i64>,
    seq: Vec<i64>,
    created: Vec<i64>,
    input: Vec<Vec<u8>>,
}

impl Inserts {
    /// One statement for the run. A task id the session already has (or one repeated in
    /// the run) is skipped: the first input wins, as on SQLite.
    fn flush(&mut self, tx: &mut Transaction<'_>) -> Result<()> {
        if self.sid.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO tasks (session_id, task_id, seq, state, attempts, created_ms, input) \
             SELECT u.sid, u.tid, u.seq, {}, 0, u.created, u.input \
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BYTEA[]) \
             AS u(sid, tid, seq, created, input) \
             ON CONFLICT (session_id, task_id) DO NOTHING",
            TaskState::Pending.as_i32()
        );
        tx.execute(
            &sql,
            &[&self.sid, &self.tid, &self.seq, &self.created, &self.input],
        )
        .map_err(pg_err)?;
        *self = Self::default();
        Ok(())
    }
}

/// A run of task finishes, column by column; no task twice.
#[derive(Default)]
struct Finishes {
    keys: HashSet<TaskKey>,
    sid: Vec<i64>,
    tid: Vec<i64>,
    state: Vec<i64>,
    output: Vec<Vec<u8>>,
    ekind: Vec<Option<i64>>,
    emsg: Vec<Option<String>>,
    etb: Vec<Option<String>>,
    epay: Vec<Option<Vec<u8>>>,
    attempts: Vec<i64>,
    finished: Vec<i64>,
    drop_input: Vec<bool>,
    started: Vec<Option<i64>>,
    exec: Vec<Option<i64>>,
    node: Vec<Option<i64>>,
}

impl Finishes {
    fn flush(&mut self, tx: &mut Transaction<'_>) -> Result<()> {
        if self.sid.is_empty() {
            return Ok(());
        }
        let n = tx
            .execute(
                "UPDATE tasks AS t SET state = u.state, output = u.output, \
                 error_kind = u.ekind, error_message = u.emsg, error_traceback = u.etb, \
                 error_payload = u.epay, attempts = u.attempts, finished_ms = u.finished, \
                 input = CASE WHEN u.drop_input THEN NULL ELSE t.input END, \
                 started_ms = u.started, executor_id = u.exec, node_id = u.node \
                 FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[], \
                 $5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::BYTEA[], $9::BIGINT[], \
                 $10::BIGINT[], $11::BOOL[], $12::BIGINT[], $13::BIGINT[], $14::BIGINT[]) \
                 AS u(sid, tid, state, output, ekind, emsg, etb, epay, attempts, finished, \
                 drop_input, started, exec, node) \
                 WHERE t.session_id = u.sid AND t.task_id = u.tid",
                &[
                    &self.sid,
                    &self.tid,
                    &self.state,
                    &self.output,
                    &self.ekind,
                    &self.emsg,
                    &self.etb,
                    &self.epay,
                    &self.attempts,
                    &self.finished,
                    &self.drop_input,
                    &self.started,
                    &self.exec,
                    &self.node,
                ],
            )
            .map_err(pg_err)?;
        if n < self.sid.len() as u64 {
            tracing::warn!(
                missing = self.sid.len() as u64 - n,
                "storage: cannot finish tasks that were never stored"
            );
        }
        *self = Self::default();
        Ok(())
    }
}
