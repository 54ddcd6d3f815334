//! The Backend gRPC service: one stream per executor-manager node (registration, heartbeats,
//! executor exits in; spawn and kill commands out) and one per executor process
//! (registration, session entered/left and result batches in; bind, tasks, unbind out), whose
//! heartbeats it keeps (`heartbeat.rs`): a silent executor is reported to the actor.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use flame_core::ids::{ExecutorId, ObjectId, SessionId, TaskId};
use flame_core::proto::{self, backend_server::Backend, executor_message, node_message};

use super::first_message;
use super::heartbeat::Liveness;
use crate::security::{self, authz};
use crate::session_manager::{Event, ManagerHandle, ObjectEvent, StoreStats};

pub struct BackendService {
    handle: ManagerHandle,
}

impl BackendService {
    pub fn new(handle: ManagerHandle) -> Self {
        Self { handle }
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Backend for BackendService {
    type NodeStreamStream = Out<proto::NodeCommand>;

    async fn node_stream(
        &self,
        req: Request<Streaming<proto::NodeMessage>>,
    ) -> Result<Response<Self::NodeStreamStream>, Status> {
        // Checked before the first frame is read: only nodes, each under its own name.
        let principal = security::principal(&req)?;
        let name = authz::backend_node(principal)?.to_string();
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut inbound = req.into_inner();
        let register = match first_message(&mut inbound, "node").await?.msg {
            Some(node_message::Msg::Register(r)) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "a node stream must start with Register",
                ))
            }
        };
        authz::node_register(&name, &register.name)?;
        if register.slots == 0 {
            return Err(Status::invalid_argument("a node needs at least one slot"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // Weak: the stream must still end when the actor lets go of it.
        let errors = tx.downgrade();
        // The actor sends NodeRegistered itself, ahead of any command for this node.
        let node = self
            .handle
            .call(|reply| Event::NodeConnected {
                register,
                peer,
                tx,
                reply,
            })
            .await?;
        let handle = self.handle.clone();
        tokio::spawn(async move {
            loop {
                let ev = match inbound.message().await {
                    Ok(Some(m)) => match m.msg {
                        Some(node_message::Msg::Heartbeat(h)) => {
                            // Answered here, beside the stream: the node fences itself when
                            // these stop (#13). The weak sender fails once the actor has let
                            // the node go, so a node declared lost hears nothing more.
                            if let Some(tx) = errors.upgrade() {
                                let _ = tx.send(Ok(head_heartbeat()));
                            }
                            if let Some(stats) = h.objects {
                                let stats = StoreStats::from(stats);
                                let ev = ObjectEvent::NodeStats { node, stats };
                                handle.send(Event::Objects(ev));
                            }
                            Event::NodeHeartbeat {
                                node,
                                memory_available: h.memory_available,
                            }
                        }
                        // #12: copies it stored, objects it removed.
                        Some(node_message::Msg::ObjectsAdded(a)) => {
                            Event::Objects(ObjectEvent::NodeAdded {
                                node,
                                objects: a
                                    .objects
                                    .into_iter()
                                    .map(|o| (ObjectId(o.object_id), o.size))
                                    .filter(|(id, _)| id.owner().0 != 0)
                                    .collect(),
                            })
                        }
                        Some(node_message::Msg::ObjectsRemoved(r)) => {
                            Event::Objects(ObjectEvent::NodeRemoved {
                                node,
                                ids: r.object_ids.into_iter().map(ObjectId).collect(),
                            })
                        }
                        Some(node_message::Msg::Drain(_)) => Event::NodeDraining { node },
                        Some(node_message::Msg::Exited(exited)) => {
                            Event::ExecutorExited { node, exited }
                        }
                        _ => {
                            tracing::warn!(%node, "unexpected node message dropped");
                            continue;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%node, error = %e, "node stream ended with an error");
                        super::report_unreadable(&errors, "node", &e);
                        break;
                    }
                };
                if !handle.send(ev) {
                    return;
                }
            }
            handle.send(Event::NodeGone { node });
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    type ExecutorStreamStream = Out<proto::ExecutorCommand>;

    async fn executor_stream(
        &self,
        req: Request<Streaming<proto::ExecutorMessage>>,
    ) -> Result<Response<Self::ExecutorStreamStream>, Status> {
        let principal = security::principal(&req)?;
        let node = authz::backend_node(principal)?.to_string();
        let mut inbound = req.into_inner();
        let id = match first_message(&mut inbound, "executor").await?.msg {
            Some(executor_message::Msg::Register(r)) => ExecutorId(r.executor_id),
            _ => {
                return Err(Status::invalid_argument(
                    "an executor stream must start with Register",
                ))
            }
        };
        // An executor binds only under its own node's principal.
        let place = self
            .handle
            .call(|reply| Event::ExecutorPlace { id, reply })
            .await?;
        authz::executor_bind(&node, id.0, place.as_ref().map(|p| p.node.as_str()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Weak: the stream must still end when the actor lets go of it.
        let errors = tx.downgrade();
        self.handle
            .call(|reply| Event::ExecutorConnected { id, tx, reply })
            .await?;
        let handle = self.handle.clone();
        let timeout = self.handle.config.executor_timeout;
        // Large outputs arrive in parts ahead of their result (see `flame_core::parts`).
        let mut parts = flame_core::parts::Assembler::new(handle.config.max_payload_bytes);
        tokio::spawn(async move {
            // Heartbeats are kept here, beside the stream, not by the actor: a ping per
            // executor per period costs it nothing, and a busy actor delays no verdict.
            let mut liveness = Liveness::new(timeout, Instant::now());
            let mut ticker = liveness.as_ref().map(|l| tokio::time::interval(l.period()));
            loop {
                let tick = async {
                    match ticker.as_mut() {
                        Some(t) => drop(t.tick().await),
                        None => std::future::pending().await,
                    }
                };
                let msg = tokio::select! {
                    // Messages first: after a stall of the daemon itself (a suspended
                    // process), answers waiting in the socket are heard before any verdict.
                    biased;
                    msg = inbound.message() => msg,
                    () = tick => {
                        let Some(l) = liveness.as_mut() else { continue };
                        if let Some(silent) = l.silent(Instant::now()) {
                            handle.send(Event::ExecutorUnresponsive { id, silent });
                            return;
                        }
                        match errors.upgrade() {
                            Some(tx) => drop(tx.send(Ok(l.ping()))),
                            // The actor let go of this executor: nobody to ping for.
                            None => ticker = None,
                        }
                        continue;
                    }
                };
                if let (Ok(Some(m)), Some(l)) = (&msg, liveness.as_mut()) {
                    let announced = match &m.msg {
                        Some(executor_message::Msg::Pong(p)) => p.sending_bytes,
                        _ => 0,
                    };
                    l.heard(Instant::now(), announced);
                }
                let ev = match msg {
                    Ok(Some(m)) => match m.msg {
                        // Heard above; nothing for the actor.
                        Some(executor_message::Msg::Pong(_)) => continue,
                        Some(executor_message::Msg::Part(p)) => {
                            parts.add(p);
                            continue;
                        }
                        Some(executor_message::Msg::Results(mut b)) => {
                            for r in b.results.iter_mut().filter(|r| r.output_in_parts) {
                                r.output = parts.take(r.session_id, r.task_id);
                                r.output_in_parts = false;
                            }
                            Event::Results {
                                executor: id,
                                results: b.results,
                            }
                        }
                        Some(executor_message::Msg::Entered(entered)) => Event::SessionEntered {
                            executor: id,
                            entered,
                        },
                        Some(executor_message::Msg::Left(l)) => Event::SessionLeft {
                            executor: id,
                            session: SessionId(l.session_id),
                        },
                        Some(executor_message::Msg::Blocked(_)) => Event::ExecutorWaiting {
                            executor: id,
                            blocked: Some(true),
                            session: SessionId(0),
                            returned: Vec::new(),
                        },
                        Some(executor_message::Msg::Unblocked(_)) => Event::ExecutorWaiting {
                            executor: id,
                            blocked: Some(false),
                            session: SessionId(0),
                            returned: Vec::new(),
                        },
                        Some(executor_message::Msg::Returned(r)) => Event::ExecutorWaiting {
                            executor: id,
                            blocked: None,
                            session: SessionId(r.session_id),
                            returned: r.task_ids.into_iter().map(TaskId).collect(),
                        },
                        _ => {
                            tracing::warn!(executor = %id, "unexpected executor message dropped");
                            continue;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(executor = %id, error = %e, "executor stream ended with an error");
                        super::report_unreadable(&errors, "executor", &e);
                        break;
                    }
                };
                if !handle.send(ev) {
                    return;
                }
            }
            handle.send(Event::ExecutorGone { id });
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// The head's answer to a node's heartbeat (#13).
fn head_heartbeat() -> proto::NodeCommand {
    proto::NodeCommand {
        msg: Some(proto::node_command::Msg::HeadHeartbeat(
            proto::HeadHeartbeat {},
        )),
    }
}
