//! How the actor handles each [`Event`]: the dispatch, and the frontend — client requests,
//! client streams, submissions and watches. Node and executor events are in `workers.rs`.
//! Durable changes go to storage; replies to clients follow the commit.

use std::time::Instant;

use bytes::Bytes;

use flame_core::ids::{SessionId, TaskId};
use flame_core::model::{key, now_ms, ErrorKind, SessionRecord, SessionState, TaskFailure};
use flame_core::proto;
use flame_core::scheduler::{Completion, Locality, TaskReads};
use flame_core::storage::{NewTask, WriteOp};
use flame_core::FlameError;

use super::actor::Actor;
use super::apply::{closed_info, deliver, open_info, send_completions};
use super::Event;

impl Actor {
    pub(super) fn handle(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Hello { previous, reply } => {
                // Only an id this daemon handed out (they are persisted) is taken back; any
                // other claim gets a fresh id.
                let id = if previous != 0 && previous < self.next_client {
                    if self.store.failure().is_some() {
                        // Nothing new to store: a returning client is answered at once.
                        let _ = reply.send(Ok(previous));
                        return;
                    }
                    previous
                } else if let Some(e) = self.refusal() {
                    let _ = reply.send(Err(e));
                    return;
                } else {
                    let Some(next) = self.next_client.checked_add(1) else {
                        let _ = reply.send(Err(FlameError::Internal(
                            "this daemon has handed out every client id".into(),
                        )));
                        return;
                    };
                    let id = self.next_client;
                    self.next_client = next;
                    id
                };
                let op = WriteOp::SetMeta {
                    key: "next_client_id".into(),
                    value: self.next_client as u64,
                };
                self.store.write(vec![op], move |r| {
                    let _ = reply.send(r.map(|_| id));
                });
            }
            Event::RegisterApplication { app, reply } => {
                if let Some(e) = self.refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.apps.insert(app.name.clone(), app.clone());
                self.store
                    .write(vec![WriteOp::PutApplication(app)], move |r| {
                        let _ = reply.send(r);
                    });
            }
            Event::GetApplication { name, reply } => {
                let app = self.apps.get(&name).cloned();
                let _ = reply.send(app.ok_or(FlameError::ApplicationNotFound(name)));
            }
            Event::ListApplications { reply } => {
                let mut apps: Vec<_> = self.apps.values().cloned().collect();
                apps.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(Ok(apps));
            }
            Event::CreateSession { mut spec, reply } => {
                if let Some(e) = self.refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                if spec.app_spec.is_empty() {
                    match self.apps.get(&spec.application) {
                        Some(app) => spec.app_spec = app.spec.clone(),
                        None => {
                            let _ =
                                reply.send(Err(FlameError::ApplicationNotFound(spec.application)));
                            return;
                        }
                    }
                }
                let id = SessionId(self.next_session);
                self.next_session += 1;
                let record = SessionRecord {
                    id,
                    spec: spec.clone(),
                    state: SessionState::Open,
                    created_ms: now_ms(),
                    closed_ms: None,
                };
                self.sched
                    .open_session(id, spec, record.created_ms, Default::default());
                let info = self.sched.session(id).map(open_info);
                let ops = vec![
                    WriteOp::SetMeta {
                        key: "next_session_id".into(),
                        value: self.next_session,
                    },
                    WriteOp::PutSession(record),
                ];
                self.store.write(ops, move |r| {
                    let _ = reply.send(r.and_then(|_| {
                        info.ok_or_else(|| FlameError::Internal("session vanished".into()))
                    }));
                });
            }
            Event::CloseSession { id, reply } => {
                self.remember_closed(id);
                // While storage fails a read would wait for it: answer from memory.
                let closing = self
                    .store
                    .failure()
                    .and(self.sched.session(id).map(open_info));
                if !self.sched.close_session(id) {
                    // Closing twice is fine; closing what never existed is not.
                    self.reply_stored_session(id, reply);
                    return;
                }
                self.startup_failures.remove(&id);
                let actions = self.sched.take_actions();
                self.apply(actions);
                let op = WriteOp::CloseSession {
                    id,
                    closed_ms: now_ms(),
                };
                self.store.write(vec![op], |_| {});
                match closing {
                    Some(mut info) => {
                        info.state = proto::SessionState::SessionClosed as i32;
                        let _ = reply.send(Ok(info));
                    }
                    None => self.reply_stored_session(id, reply),
                }
            }
            Event::ClusterInfo { reply } => {
                let _ = reply.send(Ok(self.cluster_info()));
            }
            Event::ListExecutors { reply } => self.list_executors(reply),
            Event::Overview { reply } => {
                let _ = reply.send(Ok(self.overview(now)));
            }
            Event::CancelTask { key, reply } => self.cancel_task(key, reply),
            Event::LiveView { session, reply } => self.live_view(session, reply),
            Event::ClientConnected { conn, client, tx } => {
                self.clients.insert(conn, tx);
                if client != 0 {
                    self.conn_client.insert(conn, client);
                    *self.client_streams.entry(client).or_default() += 1;
                    self.client_gone.remove(&client);
                }
            }
            Event::ClientGone { conn } => {
                self.clients.remove(&conn);
                if let Some(client) = self.conn_client.remove(&conn) {
                    let n = self.client_streams.entry(client).or_default();
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.client_streams.remove(&client);
                        self.client_gone.insert(client, now);
                    }
                }
            }
            Event::Submit {
                conn,
                session,
                tasks,
                reads,
            } => self.submit(conn, session, tasks, reads),
            Event::Watch {
                conn,
                session,
                tasks,
            } => self.watch(conn, session, tasks),
            Event::WatchedUnknown {
                conn,
                session,
                looked_up,
                tasks,
            } => {
                // Submitted again meanwhile (queued in the client while it reconnected):
                // accepted already, so the client must not send them a second time.
                let tasks = self.sched.looked_up(session, &looked_up, tasks);
                if tasks.is_empty() {
                    return;
                }
                // Note them as resubmittable before the client hears of them, so the
                // resubmission is never mistaken for a duplicate.
                self.sched.allow_resubmit(session, &tasks);
                if let Some(tx) = self.clients.get(&conn) {
                    let msg = proto::server_message::Msg::Unknown(proto::UnknownTasks {
                        session_id: session.0,
                        task_ids: tasks.into_iter().map(|t| t.0).collect(),
                    });
                    let _ = tx.send(Ok(proto::ServerMessage { msg: Some(msg) }));
                }
            }
            Event::Cancel { session, task, .. } => {
                self.sched.cancel(session, task);
            }
            Event::NodeConnected {
                register,
                peer,
                tx,
                reply,
            } => self.node_connected(register, peer, tx, reply, now),
            Event::NodeDraining { node } => {
                self.drain_node(node);
            }
            Event::DrainNode { target, reply } => {
                let _ = reply.send(self.drain_node_by_ref(&target));
            }
            Event::NodeHeartbeat {
                node,
                memory_available,
            } => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.memory_available = memory_available;
                    n.last_seen = now;
                }
            }
            Event::NodeGone { node } => self.node_gone(node, now),
            Event::ExecutorExited { node, exited } => {
                let executor = flame_core::ids::ExecutorId(exited.executor_id);
                self.close_nested_sessions(executor, now);
                self.executor_exited(node, exited, now)
            }
            Event::ExecutorConnected { id, tx, reply } => {
                self.executor_connected(id, tx, reply, now)
            }
            Event::ExecutorGone { id } => self.executor_gone(id, now),
            Event::SessionEntered { executor, entered } => {
                self.session_entered(executor, entered, now)
            }
            Event::SessionLeft { executor, session } => {
                self.sched.session_left(executor, session, now);
            }
            Event::Results { executor, results } => self.results(executor, results, now),
            Event::ExecutorWaiting {
                executor,
                blocked,
                session,
                returned,
            } => self.executor_waiting(executor, blocked, session, &returned, now),
            Event::NestedSession { executor, session } => self.nested_session(executor, session),
            Event::Shutdown { reply } => {
                // The event loop handles Shutdown itself; never reached.
                tracing::error!("Shutdown reached the event handler");
                let _ = reply.send(());
            }
            Event::ExecutorPlace { id, reply } => {
                let _ = reply.send(Ok(self.executor_place(id)));
            }
            Event::ExecutorUnresponsive { id, silent } => {
                self.executor_unresponsive(id, silent, now)
            }
            Event::DropNode {
                name,
                reason,
                reply,
            } => {
                let _ = reply.send(Ok(self.drop_node(&name, &reason, now)));
            }
            Event::Objects(ev) => self.handle_objects(ev),
        }
    }

    /// Answer with a session as storage has it (closed sessions live only there).
    fn reply_stored_session(&self, id: SessionId, reply: super::Reply<proto::SessionInfo>) {
        self.store.read(move |st| {
            let r = match st.get_session(id) {
                Ok(Some((rec, counts))) => Ok(closed_info(&rec, counts)),
                Ok(None) => Err(FlameError::SessionNotFound(id)),
                Err(e) => Err(e),
            };
            let _ = reply.send(r);
        });
    }

    fn submit(
        &mut self,
        conn: u64,
        session: SessionId,
        tasks: Vec<(TaskId, Bytes)>,
        reads: Vec<(TaskId, TaskReads)>,
    ) {
        if let Some(refused) = self.not_owner(conn, session) {
            self.reject(conn, session, tasks.into_iter().map(|t| t.0), refused);
            return;
        }
        if let Some(e) = self.refusal() {
            let f = TaskFailure::new(ErrorKind::ErrorStorageUnavailable, e.to_string());
            self.reject(conn, session, tasks.into_iter().map(|(t, _)| t), f);
            return;
        }
        let limit = self.cfg.max_payload_bytes;
        let (tasks, too_big): (Vec<_>, Vec<_>) = tasks
            .into_iter()
            .partition(|(_, input)| input.len() <= limit);
        for (tid, input) in too_big {
            let f = TaskFailure::new(
                ErrorKind::ErrorPayloadTooLarge,
                format!(
                    "task {} input is {} bytes, over the daemon's limit of {limit} bytes",
                    tid.0,
                    input.len()
                ),
            );
            self.reject(conn, session, [tid], f);
        }
        let accepted = match self.sched.accept(session, tasks.clone()) {
            Ok(a) => a,
            Err(_) => {
                let ids = tasks.iter().map(|t| t.0);
                let closed = session.0 != 0 && session.0 < self.next_session;
                let (kind, msg) = if session.0 == 0 {
                    (
                        ErrorKind::ErrorInvalidArgument,
                        "session_id is required (got 0)".to_string(),
                    )
                } else if closed {
                    (
                        ErrorKind::ErrorSessionClosed,
                        format!("session {session} is closed"),
                    )
                } else {
                    (
                        ErrorKind::ErrorSessionNotFound,
                        format!("session {session} does not exist"),
                    )
                };
                self.reject(conn, session, ids, TaskFailure::new(kind, msg));
                return;
            }
        };
        if accepted.is_empty() {
            return;
        }
        // Queue at once and store in the background. The storage thread applies writes in
        // order, so a task's insert always commits before its result, and a result reaches
        // the client only after its commit. Queuing now (not after the commit) also means a
        // cancel or a close that follows the submission on the stream always finds the task.
        let op = WriteOp::InsertTasks {
            session,
            tasks: accepted
                .iter()
                .map(|(id, input)| NewTask {
                    id: *id,
                    input: input.clone(),
                })
                .collect(),
            created_ms: now_ms(),
        };
        self.store.write_only(vec![op]);
        self.metrics.submitted.increment(accepted.len() as u64);
        let tasks = accepted.into_iter().map(|(t, i)| (t, i, 0)).collect();
        if reads.is_empty() {
            self.sched.enqueue(session, tasks, Some(conn));
        } else {
            let locality: &dyn Locality = &self.object_dir.dir;
            self.sched
                .enqueue_reading(session, tasks, reads, Some(conn), locality);
        }
    }

    /// Fail submissions that were never accepted; nothing is stored for them.
    fn reject(
        &mut self,
        conn: u64,
        session: SessionId,
        tasks: impl IntoIterator<Item = TaskId>,
        failure: TaskFailure,
    ) {
        let items: Vec<(Completion, String)> = tasks
            .into_iter()
            .map(|t| {
                let c = Completion {
                    key: key(session, t),
                    state: flame_core::model::TaskState::Failed,
                    output: Bytes::new(),
                    error: Some(failure.clone()),
                    attempts: 0,
                    watcher: Some(conn),
                    started: None,
                    ran_on: None,
                };
                (c, String::new())
            })
            .collect();
        deliver(&self.clients, items);
    }

    /// Route completions of these tasks to `conn`: unfinished ones when they finish, finished
    /// ones now, from storage.
    fn watch(&mut self, conn: u64, session: SessionId, tasks: Vec<TaskId>) {
        if let Some(refused) = self.not_owner(conn, session) {
            self.reject(conn, session, tasks, refused);
            return;
        }
        let client = self.stream_client(conn);
        let stored: Vec<TaskId> = tasks
            .into_iter()
            .filter(|t| !self.sched.watch(session, *t, conn))
            .collect();
        if stored.is_empty() {
            return;
        }
        let Some(tx) = self.clients.get(&conn).cloned() else {
            return;
        };
        self.sched.looking_up(session, &stored);
        let me = self.self_tx.clone();
        self.store.read(move |st| {
            let mut items = Vec::new();
            let mut unknown = Vec::new();
            let looked_up = stored.clone();
            // A closed session is not in memory: its owner comes from storage.
            let owner = match st.get_session(session) {
                Ok(Some((rec, _))) => rec.spec.owner,
                _ => 0,
            };
            let refused = super::ownership::refusal(session, owner, client);
            for t in stored {
                if let Some(f) = &refused {
                    items.push(proto::TaskCompletion {
                        session_id: session.0,
                        task_id: t.0,
                        state: flame_core::model::TaskState::Failed.as_i32(),
                        output: Bytes::new(),
                        error: Some(f.clone().into()),
                        attempts: 0,
                        log: String::new(),
                        output_in_parts: false,
                    });
                    continue;
                }
                match st.get_task(key(session, t)) {
                    Ok(Some(rec)) if rec.state.is_final() => {
                        let mut c = rec.to_completion();
                        // A log that cannot be read must not hold back the result itself.
                        c.log = st.get_task_log(rec.key).ok().flatten().unwrap_or_default();
                        items.push(c);
                    }
                    // Stored, unfinished, yet not in memory: its session is closed or gone.
                    Ok(Some(_)) => {}
                    Ok(None) => unknown.push(t),
                    Err(e) => items.push(proto::TaskCompletion {
                        session_id: session.0,
                        task_id: t.0,
                        state: flame_core::model::TaskState::Failed.as_i32(),
                        output: Bytes::new(),
                        error: Some(
                            TaskFailure::new(ErrorKind::ErrorInternal, e.to_string()).into(),
                        ),
                        attempts: 0,
                        log: String::new(),
                        output_in_parts: false,
                    }),
                }
            }
            if !items.is_empty() {
                send_completions(&tx, items);
            }
            // Never stored (in flight when the daemon stopped): the client submits again,
            // once the actor has noted them as resubmittable. Sent even with none unknown,
            // so the actor forgets the lookup.
            let _ = me.send(Event::WatchedUnknown {
                conn,
                session,
                looked_up,
                tasks: unknown,
            });
        });
    }
}
