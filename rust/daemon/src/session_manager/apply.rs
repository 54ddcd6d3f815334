//! Carrying out the scheduler's actions: commands to nodes and executors, durable writes for
//! finished tasks, and — after the commit — completions to the clients that watch them.

use std::collections::HashMap;

use flame_core::model::{SessionRecord, SessionState, TaskCounts};
use flame_core::proto::{self, executor_command, node_command};
use flame_core::scheduler::{Action, Completion, Session};
use flame_core::storage::WriteOp;

use super::actor::Actor;
use super::introspection::wall_ms;
use super::ClientTx;

impl Actor {
    pub(super) fn apply(&mut self, actions: Vec<Action>) {
        let mut ops = Vec::new();
        let mut done = Vec::new();
        // One reading of both clocks per batch turns dispatch instants into wall time.
        let mut clocks: Option<(std::time::Instant, i64)> = None;
        // Counted here and added to the metrics once per batch.
        let mut finished = TaskCounts::default();
        let mut retried = 0u64;
        for action in actions {
            match action {
                Action::Spawn {
                    node,
                    executor,
                    python,
                } => {
                    let blocked = self.sched.blocked_on(node);
                    let cmd = node_command::Msg::Spawn(proto::SpawnExecutor {
                        executor_id: executor.0,
                        python,
                        beyond_slots: u32::try_from(blocked).unwrap_or(u32::MAX),
                    });
                    self.send_to_node(node, cmd);
                }
                Action::Kill {
                    node,
                    executor,
                    reason,
                } => {
                    let cmd = node_command::Msg::Kill(proto::KillExecutor {
                        executor_id: executor.0,
                        reason,
                    });
                    self.send_to_node(node, cmd);
                }
                Action::Bind { executor, session } => {
                    let Some(s) = self.sched.session(session) else {
                        continue;
                    };
                    let cmd = executor_command::Msg::Bind(proto::BindSession {
                        session_id: session.0,
                        application: s.spec.application.clone(),
                        app_spec: s.spec.app_spec.clone(),
                        common_data: s.spec.common_data.clone(),
                        max_output_bytes: self.cfg.max_payload_bytes as u64,
                        result_object_bytes: self.cfg.result_object_bytes,
                    });
                    self.send_to_executor(executor, cmd);
                }
                Action::Dispatch {
                    executor,
                    session,
                    tasks,
                } => {
                    let tasks = tasks
                        .into_iter()
                        .map(|(id, input, attempt)| proto::TaskAssignment {
                            task_id: id.0,
                            input,
                            attempt,
                        })
                        .collect();
                    let cmd = executor_command::Msg::Tasks(proto::TaskBatch {
                        session_id: session.0,
                        tasks,
                    });
                    self.send_to_executor(executor, cmd);
                }
                Action::Unbind { executor, session } => {
                    let cmd = executor_command::Msg::Unbind(proto::UnbindSession {
                        session_id: session.0,
                    });
                    self.send_to_executor(executor, cmd);
                }
                Action::Finish(c) => {
                    let (mono, wall) = *clocks.get_or_insert_with(|| {
                        (std::time::Instant::now(), flame_core::model::now_ms())
                    });
                    finished.add(c.state, 1);
                    // The executor's own measure when it sent one; else since the dispatch
                    // (timeouts, cancellations, lost executors), which also counts the time
                    // spent queued in the executor's window.
                    let started_ms = match self.run_times.remove(&c.key) {
                        Some(us) => {
                            self.metrics.task_run.record(us as f64 / 1e6);
                            Some(wall - (us / 1000) as i64)
                        }
                        None => c.started.map(|t| wall_ms(t, mono, wall)),
                    };
                    ops.push(WriteOp::FinishTask {
                        key: c.key,
                        state: c.state,
                        output: c.output.clone(),
                        error: c.error.clone(),
                        attempts: c.attempts,
                        finished_ms: wall,
                        started_ms,
                        ran_on: c.ran_on,
                        keep_input: self
                            .object_dir
                            .dir
                            .producer(flame_core::ids::ObjectId::result_of(c.key.task))
                            .is_some(),
                    });
                    // The emptiness test keeps tasks that print nothing off the hash map.
                    let log = if self.task_logs.is_empty() {
                        String::new()
                    } else {
                        self.task_logs.remove(&c.key).unwrap_or_default()
                    };
                    if !log.is_empty() {
                        ops.push(WriteOp::PutTaskLog {
                            key: c.key,
                            log: log.clone(),
                        });
                    }
                    done.push((c, log));
                }
                Action::RecordAttempts { key, attempts } => {
                    retried += 1;
                    ops.push(WriteOp::SetAttempts { key, attempts });
                }
            }
        }
        // Logs of results that did not finish their task (a retried attempt, a stale result)
        // are not kept: a task's log is its last attempt's.
        self.task_logs.clear();
        self.count_finished(finished, retried, clocks.map(|(mono, _)| mono));
        // Results this batch did not finish (ignored, or retried) keep no run time.
        self.run_times.clear();
        if ops.is_empty() {
            return;
        }
        if done.is_empty() {
            self.store.write_only(ops);
            return;
        }
        // Only the streams that have something to receive are cloned into the callback.
        let clients: HashMap<u64, ClientTx> = done
            .iter()
            .filter_map(|(c, _)| c.watcher)
            .filter_map(|w| self.clients.get(&w).map(|tx| (w, tx.clone())))
            .collect();
        // Delivered only once stored: a result a restart would lose is never reported. The
        // writer retries a failing commit until it works; it errs only when the daemon stops
        // with storage still failing, and then these tasks run again after the restart.
        self.store.write(ops, move |result| match result {
            Ok(()) => deliver(&clients, done),
            Err(e) => tracing::error!(error = %e, tasks = done.len(), "finished tasks were not stored; not reporting them"),
        });
    }

    /// Bump the outcome counters and the tasks/s history once for a whole batch.
    fn count_finished(&mut self, c: TaskCounts, retried: u64, at: Option<std::time::Instant>) {
        let m = &self.metrics;
        for (counter, n) in [
            (&m.succeeded, c.succeeded),
            (&m.failed, c.failed),
            (&m.cancelled, c.cancelled),
            (&m.retried, retried),
        ] {
            if n > 0 {
                counter.increment(n);
            }
        }
        let done = c.succeeded + c.failed + c.cancelled;
        if let Some(at) = at.filter(|_| done > 0) {
            let elapsed = at.saturating_duration_since(self.started);
            self.throughput
                .record(elapsed, u32::try_from(done).unwrap_or(u32::MAX));
        }
    }

    fn send_to_node(&self, node: flame_core::ids::NodeId, msg: node_command::Msg) {
        let sent = self
            .nodes
            .get(&node)
            .is_some_and(|n| n.tx.send(Ok(proto::NodeCommand { msg: Some(msg) })).is_ok());
        if !sent {
            tracing::warn!(node = %node, "command to a node that is gone");
        }
    }

    fn send_to_executor(&self, executor: flame_core::ids::ExecutorId, msg: executor_command::Msg) {
        let sent = self.executors.get(&executor).is_some_and(|tx| {
            tx.send(Ok(proto::ExecutorCommand { msg: Some(msg) }))
                .is_ok()
        });
        if !sent {
            // Its stream is gone; ExecutorGone (or the node's exit report) will follow.
            tracing::debug!(executor = %executor, "command to an executor that is gone");
        }
    }
}

/// Send completions (each with what its task printed) to the client streams that watch
/// them, one batch per stream.
pub(super) fn deliver(clients: &HashMap<u64, ClientTx>, done: Vec<(Completion, String)>) {
    let mut batches: HashMap<u64, Vec<proto::TaskCompletion>> = HashMap::new();
    for (c, log) in done {
        let Some(w) = c.watcher else {
            continue;
        };
        batches.entry(w).or_default().push(proto::TaskCompletion {
            session_id: c.key.session.0,
            task_id: c.key.task.0,
            state: c.state.as_i32(),
            output: c.output,
            error: c.error.map(Into::into),
            attempts: c.attempts,
            log,
            output_in_parts: false,
        });
    }
    for (w, items) in batches {
        if let Some(tx) = clients.get(&w) {
            send_completions(tx, items);
        }
    }
}

/// Send completions to one client stream; large outputs go ahead in parts (see
/// `flame_core::parts`), so the stream's buffer never grows to an output's size.
pub(super) fn send_completions(tx: &ClientTx, mut items: Vec<proto::TaskCompletion>) {
    use proto::server_message::Msg;
    for c in items.iter_mut() {
        let parts = flame_core::parts::split(c.session_id, c.task_id, &c.output);
        if parts.is_empty() {
            continue;
        }
        for p in parts {
            let _ = tx.send(Ok(proto::ServerMessage {
                msg: Some(Msg::Part(p)),
            }));
        }
        c.output = bytes::Bytes::new();
        c.output_in_parts = true;
    }
    let msg = proto::ServerMessage {
        msg: Some(Msg::Completions(proto::CompletionBatch { items })),
    };
    let _ = tx.send(Ok(msg));
}

fn spec_for_info(spec: &flame_core::model::SessionSpec) -> proto::SessionSpec {
    // The service itself can be large and is of no use to a reader: leave it out.
    let mut spec = spec.clone();
    spec.app_spec = Default::default();
    spec.into()
}

/// Info of an open session, from memory.
pub(super) fn open_info(s: &Session) -> proto::SessionInfo {
    info(
        s.id.0,
        &s.spec,
        SessionState::Open,
        s.counts,
        s.created_ms,
        s.executors.len() as u32,
    )
}

/// Info of a session from storage (closed, or listed).
pub(crate) fn closed_info(rec: &SessionRecord, counts: TaskCounts) -> proto::SessionInfo {
    info(rec.id.0, &rec.spec, rec.state, counts, rec.created_ms, 0)
}

fn info(
    id: u64,
    spec: &flame_core::model::SessionSpec,
    state: SessionState,
    c: TaskCounts,
    created_ms: i64,
    executors: u32,
) -> proto::SessionInfo {
    let state = match state {
        SessionState::Open => proto::SessionState::SessionOpen,
        SessionState::Closed => proto::SessionState::SessionClosed,
    };
    proto::SessionInfo {
        id,
        spec: Some(spec_for_info(spec)),
        state: state as i32,
        pending: c.pending,
        running: c.running,
        succeeded: c.succeeded,
        failed: c.failed,
        cancelled: c.cancelled,
        created_ms,
        executors,
    }
}
