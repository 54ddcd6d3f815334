//! How the actor handles the backend: nodes registering, beating and leaving, executors
//! connecting, entering sessions, reporting results, and exiting.

use std::time::Instant;

use flame_core::ids::{ExecutorId, NodeId, SessionId, TaskId, TaskKey};
use flame_core::model::{key, ErrorKind, TaskFailure};
use flame_core::proto;
use flame_core::scheduler::ExecutorState;
use flame_core::FlameError;

use super::actor::{Actor, NodeLink};
use super::{ExecutorTx, NodeTx, Reply};

impl Actor {
    pub(super) fn node_connected(
        &mut self,
        register: proto::NodeRegister,
        peer: String,
        tx: NodeTx,
        reply: Reply<NodeId>,
        now: Instant,
    ) {
        // A node coming back keeps its id if this daemon gave it out and it is free.
        let previous = register.previous_node_id;
        let id = if previous != 0
            && previous < self.next_node
            && !self.nodes.contains_key(&NodeId(previous))
        {
            NodeId(previous)
        } else {
            self.next_node = self.next_node.saturating_add(1);
            self.store
                .write_only(vec![flame_core::storage::WriteOp::SetMeta {
                    key: super::actor::META_NODE.into(),
                    value: self.next_node,
                }]);
            NodeId(self.next_node - 1)
        };
        // NodeRegistered must be the first command on the stream: send it here,
        // before the scheduler can queue a spawn for this node.
        let registered = proto::NodeCommand {
            msg: Some(proto::node_command::Msg::Registered(
                proto::NodeRegistered {
                    node_id: id.0,
                    heartbeat_ms: self.cfg.heartbeat.as_millis() as u32,
                    node_timeout_ms: u32::try_from(self.cfg.node_timeout.as_millis())
                        .unwrap_or(u32::MAX),
                    state_id: self.state_id.to_string(),
                },
            )),
        };
        let _ = tx.send(Ok(registered));
        self.sched
            .add_node(id, register.name.clone(), register.slots);
        self.object_node_joined(id, &register.name, &register.object_address, &tx);
        self.nodes.insert(
            id,
            NodeLink {
                tx,
                name: register.name,
                last_seen: now,
                peer,
                cpus: register.cpus,
                memory_total: register.memory_bytes,
                memory_available: register.memory_available,
                draining: false,
                told_drained: false,
            },
        );
        tracing::info!(node = %id, name = %self.nodes[&id].name, slots = register.slots,
            peer = %self.nodes[&id].peer, "node joined");
        let _ = reply.send(Ok(id));
    }

    pub(super) fn executor_connected(
        &mut self,
        id: ExecutorId,
        tx: ExecutorTx,
        reply: Reply<()>,
        now: Instant,
    ) {
        if self.sched.executor_registered(id, now) {
            self.executors.insert(id, tx);
            let _ = reply.send(Ok(()));
        } else {
            let _ = reply.send(Err(FlameError::InvalidArgument(format!(
                "executor {id} was not started by this session manager"
            ))));
        }
    }

    pub(super) fn executor_gone(&mut self, id: ExecutorId, now: Instant) {
        // Its node usually reports the exit, with the reason (a signal, the memory
        // limit), a moment later: wait briefly for that before declaring it lost.
        if self.executors.remove(&id).is_some() {
            self.lost_streams.insert(id, now + LOST_STREAM_GRACE);
        }
    }

    /// An executor stopped answering heartbeats: stop listening to it, move its tasks, and
    /// have its node kill the process (it may be frozen, and would otherwise hold its slot
    /// until the daemon exits).
    pub(super) fn executor_unresponsive(
        &mut self,
        id: ExecutorId,
        silent: std::time::Duration,
        now: Instant,
    ) {
        if self.executors.remove(&id).is_none() {
            return;
        }
        self.lost_streams.remove(&id);
        tracing::warn!(executor = %id, ?silent, "executor answered no heartbeat; killing it and running its tasks elsewhere");
        let reason = format!(
            "executor {id} answered no heartbeat for {:.1} s",
            silent.as_secs_f64()
        );
        self.sched.executor_unresponsive(id, &reason, now);
    }

    pub(super) fn session_entered(
        &mut self,
        executor: ExecutorId,
        entered: proto::SessionEntered,
        now: Instant,
    ) {
        let sid = SessionId(entered.session_id);
        if entered.error.is_none() {
            self.startup_failures.remove(&sid);
        }
        let error = entered.error.map(TaskFailure::from);
        self.sched.session_entered(executor, sid, error, now);
    }

    pub(super) fn node_gone(&mut self, node: NodeId, now: Instant) {
        if let Some(link) = self.nodes.remove(&node) {
            tracing::warn!(node = %node, name = %link.name, "node left");
        }
        self.object_node_lost(node);
        // A node killed outright leaves its executors running and connected: tell them to
        // stop, and stop listening to them, so their work is only done once — elsewhere.
        let orphans: Vec<ExecutorId> = self
            .sched
            .nodes()
            .filter(|n| n.id == node)
            .flat_map(|n| n.executors.iter().copied())
            .collect();
        for id in orphans {
            if let Some(tx) = self.executors.remove(&id) {
                let _ = tx.send(Ok(shutdown_command("its node left the cluster")));
            }
        }
        self.sched.remove_node(node, now);
    }

    pub(super) fn executor_exited(
        &mut self,
        node: NodeId,
        exited: proto::ExecutorExited,
        now: Instant,
    ) {
        let id = ExecutorId(exited.executor_id);
        let how = exit_reason(&exited);
        if self.sched.executor(id).is_some_and(|e| e.node != node) {
            tracing::warn!(executor = %id, %node, "exit report for another node's executor ignored");
            return;
        }
        self.lost_streams.remove(&id);
        let here = self.sched.executor(id).filter(|e| e.node == node);
        let starting_for = here.and_then(|e| match e.state {
            ExecutorState::Starting => e.reserved_for,
            _ => None,
        });
        if here.is_some() {
            self.executors.remove(&id);
        }
        self.sched
            .executor_exited(node, id, &format!("executor {id} {how}"), now);
        let Some(sid) = starting_for else {
            return;
        };
        // An executor that dies before it registers usually cannot start at all (wrong
        // interpreter, flame not installed there): fail the session instead of looping.
        let n = self.startup_failures.entry(sid).or_insert(0);
        *n += 1;
        tracing::warn!(executor = %id, session = %sid, %how, stderr = %exited.stderr_tail, "executor failed to start");
        if *n >= self.cfg.max_startup_failures {
            let msg = format!(
                "executors for session {sid} failed to start {n} times; last one {how}: {}",
                exited.stderr_tail.trim()
            );
            self.sched.fail_session(
                sid,
                TaskFailure::new(ErrorKind::ErrorSessionEnterFailed, msg),
            );
        }
    }

    pub(super) fn results(
        &mut self,
        executor: ExecutorId,
        results: Vec<proto::TaskResult>,
        now: Instant,
    ) {
        self.result_objects(executor, &results);
        let limit = self.cfg.max_payload_bytes;
        let items = results
            .into_iter()
            .map(|mut r| {
                if !r.log.is_empty() {
                    let log = bound_log(std::mem::take(&mut r.log));
                    let key = key(SessionId(r.session_id), TaskId(r.task_id));
                    self.task_logs.insert(key, log);
                }
                let outcome = if r.ok {
                    if r.output.len() > limit {
                        Err(TaskFailure::new(
                            ErrorKind::ErrorPayloadTooLarge,
                            format!(
                                "task {} result is {} bytes, over the daemon's limit of {limit} bytes",
                                r.task_id,
                                r.output.len()
                            ),
                        ))
                    } else {
                        Ok(r.output)
                    }
                } else {
                    Err(r.error.map(TaskFailure::from).unwrap_or_else(|| {
                        TaskFailure::new(ErrorKind::ErrorInternal, "task failed without an error")
                    }))
                };
                let (session, task) = (SessionId(r.session_id), TaskId(r.task_id));
                if r.run_us > 0 {
                    self.run_times.insert(TaskKey { session, task }, r.run_us);
                }
                (session, task, outcome)
            })
            .collect();
        self.sched.task_results(executor, items, now);
    }
}

/// Most bytes of one task's log the daemon keeps. The Python executor already keeps only
/// the last 1 Mi characters (at most 4 MiB of UTF-8); this guards against other executors.
pub(super) const MAX_LOG_BYTES: usize = 4 << 20;

/// `log`, or its last [`MAX_LOG_BYTES`] (cut at a character boundary) after a note of how
/// much was dropped.
pub(super) fn bound_log(log: String) -> String {
    if log.len() <= MAX_LOG_BYTES {
        return log;
    }
    let mut cut = log.len() - MAX_LOG_BYTES;
    while !log.is_char_boundary(cut) {
        cut += 1;
    }
    format!(
        "[flame: {cut} earlier bytes of this task's output were dropped]\n{}",
        &log[cut..]
    )
}

/// How long an executor whose stream closed waits for its node's exit report before it is
/// declared lost without one.
pub(super) const LOST_STREAM_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// How an executor ended, for users: the signal or exit code, and what the node or the
/// process said last (the memory-limit kill, the last line of a crash).
fn exit_reason(exited: &proto::ExecutorExited) -> String {
    let how = if exited.signal != 0 {
        format!("killed by signal {}", exited.signal)
    } else {
        format!("exited with code {}", exited.exit_code)
    };
    let tail = exited.stderr_tail.trim();
    let said = if tail.starts_with("killed by flame") {
        tail.lines().next()
    } else {
        tail.lines().rev().find(|l| !l.trim().is_empty())
    };
    match said {
        Some(line) => {
            let line: String = line.trim().chars().take(300).collect();
            format!("{how} ({line})")
        }
        None => how,
    }
}

/// The command that tells an executor to leave its session and exit.
pub(super) fn shutdown_command(reason: &str) -> proto::ExecutorCommand {
    proto::ExecutorCommand {
        msg: Some(proto::executor_command::Msg::Shutdown(proto::Shutdown {
            reason: reason.into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::{bound_log, MAX_LOG_BYTES};

    #[test]
    fn a_log_over_the_bound_keeps_its_tail_at_a_character_boundary() {
        let short = "hello\n".to_string();
        assert_eq!(bound_log(short.clone()), short);
        // "é" is two bytes: the cut lands inside one unless it is moved to a boundary.
        let long = format!("x{}", "é".repeat(MAX_LOG_BYTES / 2 + 10)) + "end";
        let bounded = bound_log(long.clone());
        let (note, tail) = bounded.split_once('\n').expect("a note line");
        assert!(
            note.contains("earlier bytes") && note.contains("dropped"),
            "{note}"
        );
        assert!(tail.len() <= MAX_LOG_BYTES && tail.ends_with("end"));
        assert!(long.ends_with(tail));
    }
}
