//! The Frontend gRPC service: applications, sessions, cluster info, introspection (tasks,
//! executors, the unary cancel), and the per-client stream that carries task submissions in
//! and completions out.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::Stream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status, Streaming};

use flame_core::client::CLIENT_ID_HEADER;
use flame_core::ids::{NodeId, ObjectId, SessionId, TaskId, TaskKey};
use flame_core::model::{now_ms, ApplicationRecord, SessionSpec, TaskState};
use flame_core::proto::{self, client_message, frontend_server::Frontend};
use flame_core::scheduler::{ObjectRead, TaskReads};
use flame_core::view::page_size;
use flame_core::FlameError;

use super::access::{self, Access};
use super::{admin, authorize, directory};
use crate::executor_manager::LocalNodeReport;
use crate::reads::{Reads, TaskQuery};
use crate::security::interceptor::Accepted;
use crate::security::{authz, Security};
use crate::session_manager::{Event, ManagerHandle, ObjectEvent};

pub struct FrontendService {
    handle: ManagerHandle,
    /// Introspection (sessions, tasks, logs) is read here, never through the actor's storage.
    reads: Reads,
    /// Who may do what (#11): every call but `Discover` and `JoinNode` goes through it.
    access: Access,
    next_conn: Arc<AtomicU64>,
    /// Tokens, the CA and revocations (the security calls in `admin.rs`).
    security: Arc<Security>,
    /// The head's own node's object store, when it has one (#12; `HelloReply`).
    local_node: Option<LocalNodeReport>,
    /// Tokens nodes asked about (`AuthorizeObjects`), checked before.
    asked_tokens: Arc<Accepted>,
    /// The head's Unix socket (`local_socket`), offered to callers on this machine.
    head_socket: Option<PathBuf>,
}

impl FrontendService {
    pub fn new(reads: Reads, security: Arc<Security>) -> Self {
        Self {
            handle: reads.manager().clone(),
            access: Access::new(security.clone(), reads.clone()),
            reads,
            next_conn: Arc::new(AtomicU64::new(1)),
            security,
            local_node: None,
            asked_tokens: Arc::default(),
            head_socket: None,
        }
    }

    /// Offers callers on this machine the head's Unix socket at `path`.
    pub fn with_head_socket(mut self, path: Option<PathBuf>) -> Self {
        self.head_socket = path;
        self
    }

    /// Hands clients the object store of the head's own node once it has registered.
    pub fn with_local_node(mut self, report: LocalNodeReport) -> Self {
        self.local_node = Some(report);
        self
    }
}

/// Longest application name (or interpreter path) accepted; names end up in error messages,
/// which travel in HTTP/2 trailers.
const MAX_NAME_BYTES: usize = 1024;

fn check_name(what: &str, name: &str) -> Result<(), Status> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{what} is {} bytes; at most {MAX_NAME_BYTES} are accepted",
            name.len()
        )));
    }
    Ok(())
}

fn session_id(raw: u64) -> Result<SessionId, Status> {
    if raw == 0 {
        return Err(Status::invalid_argument("session_id is required (got 0)"));
    }
    Ok(SessionId(raw))
}

fn task_key(r: proto::TaskRef) -> Result<TaskKey, Status> {
    if r.task_id == 0 {
        return Err(Status::invalid_argument("task_id is required (got 0)"));
    }
    Ok(TaskKey {
        session: session_id(r.session_id)?,
        task: TaskId(r.task_id),
    })
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<proto::ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Frontend for FrontendService {
    async fn hello(
        &self,
        req: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::HelloReply>, Status> {
        let caller = self.access.of(&req).await?;
        // A node's socket is a path on this machine: only a caller here can use it (over
        // loopback TCP, or already on the head's own socket).
        let here = match req.remote_addr() {
            Some(a) => admin::is_loopback_peer(a.ip()),
            None => req.extensions().get::<UdsConnectInfo>().is_some(),
        };
        let previous = req.into_inner().previous_client_id;
        self.access.claim_client(&caller, previous)?;
        let id = self
            .handle
            .call(|reply| Event::Hello { previous, reply })
            .await?;
        self.access.claim_client(&caller, id)?;
        let local = self
            .local_node
            .as_ref()
            .filter(|_| here)
            .and_then(|r| r.borrow().clone());
        Ok(Response::new(proto::HelloReply {
            client_id: id,
            version: env!("CARGO_PKG_VERSION").into(),
            max_message_bytes: self.handle.config.max_payload_bytes as u64,
            state_id: self.handle.state_id.to_string(),
            local_node_id: local.as_ref().map_or(0, |n| n.node_id),
            node_socket: local.map_or_else(String::new, |n| n.socket.display().to_string()),
            head_socket: match (&self.head_socket, here) {
                (Some(path), true) => path.display().to_string(),
                _ => String::new(),
            },
        }))
    }

    async fn register_application(
        &self,
        req: Request<proto::Application>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.access.of(&req).await?;
        let a = req.into_inner();
        if a.name.trim().is_empty() {
            return Err(Status::invalid_argument("an application needs a name"));
        }
        check_name("the application name", &a.name)?;
        if a.spec.len() + a.description.len() > self.handle.config.max_payload_bytes {
            return Err(FlameError::PayloadTooLarge(format!(
                "application spec and description are {} bytes",
                a.spec.len() + a.description.len()
            ))
            .into());
        }
        let app = ApplicationRecord {
            name: a.name,
            spec: a.spec,
            description: a.description,
            created_ms: now_ms(),
        };
        self.handle
            .call(|reply| Event::RegisterApplication { app, reply })
            .await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn get_application(
        &self,
        req: Request<proto::ApplicationRef>,
    ) -> Result<Response<proto::Application>, Status> {
        self.access.of(&req).await?;
        let name = req.into_inner().name;
        check_name("the application name", &name)?;
        let a = self
            .handle
            .call(|reply| Event::GetApplication { name, reply })
            .await?;
        Ok(Response::new(proto::Application {
            name: a.name,
            spec: a.spec,
            description: a.description,
        }))
    }

    async fn list_applications(
        &self,
        req: Request<proto::Empty>,
    ) -> Result<Response<proto::ApplicationList>, Status> {
        self.access.of(&req).await?;
        let apps = self
            .handle
            .call(|reply| Event::ListApplications { reply })
            .await?;
        let applications = apps
            .into_iter()
            .map(|a| proto::Application {
                name: a.name,
                spec: a.spec,
                description: a.description,
            })
            .collect();
        Ok(Response::new(proto::ApplicationList { applications }))
    }

    async fn create_session(
        &self,
        req: Request<proto::CreateSessionRequest>,
    ) -> Result<Response<proto::SessionInfo>, Status> {
        let caller = self.access.of(&req).await?;
        let parent = flame_core::client::opened_by_executor(&req);
        let mut spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("CreateSession needs a spec"))?;
        check_name("the application name", &spec.application)?;
        check_name("the interpreter path", &spec.python)?;
        // The authenticated user is the session's owner and its tenant.
        spec.user = authz::session_user(&caller, &spec.user)?;
        let user = spec.user.clone();
        let spec = SessionSpec::try_from(spec)?;
        let limit = self.handle.config.max_payload_bytes;
        if spec.common_data.len() + spec.app_spec.len() > limit {
            return Err(FlameError::PayloadTooLarge(format!(
                "session service and common data are {} bytes, over the limit of {limit}",
                spec.common_data.len() + spec.app_spec.len()
            ))
            .into());
        }
        let info = self
            .handle
            .call(|reply| Event::CreateSession { spec, reply })
            .await?;
        self.access
            .security
            .owners
            .set_session(SessionId(info.id), &user);
        if let Some(executor) = parent {
            // Opened by a task: closed when that executor's process ends.
            let session = SessionId(info.id);
            self.handle.send(Event::NestedSession { executor, session });
        }
        Ok(Response::new(info))
    }

    async fn get_session(
        &self,
        req: Request<proto::SessionRef>,
    ) -> Result<Response<proto::SessionInfo>, Status> {
        let caller = self.access.of(&req).await?;
        let id = session_id(req.into_inner().session_id)?;
        let info = self.reads.session(id).await?;
        let owner = info.spec.as_ref().map_or("", |s| s.user.as_str());
        authz::session_access(&caller, id, owner)?;
        Ok(Response::new(info))
    }

    async fn list_sessions(
        &self,
        req: Request<proto::Empty>,
    ) -> Result<Response<proto::SessionList>, Status> {
        let caller = self.access.of(&req).await?;
        let mut sessions = self.reads.sessions().await?;
        // A user lists its own sessions; an admin all.
        sessions.retain(|s| caller.owns(s.spec.as_ref().map_or("", |s| s.user.as_str())));
        Ok(Response::new(proto::SessionList { sessions }))
    }

    async fn close_session(
        &self,
        req: Request<proto::SessionRef>,
    ) -> Result<Response<proto::SessionInfo>, Status> {
        let caller = self.access.of(&req).await?;
        let id = session_id(req.into_inner().session_id)?;
        self.access.session(&caller, id).await?;
        let info = self
            .handle
            .call(|reply| Event::CloseSession { id, reply })
            .await?;
        Ok(Response::new(info))
    }

    async fn get_cluster_info(
        &self,
        req: Request<proto::Empty>,
    ) -> Result<Response<proto::ClusterInfo>, Status> {
        self.access.of(&req).await?;
        let info = self
            .handle
            .call(|reply| Event::ClusterInfo { reply })
            .await?;
        Ok(Response::new(info))
    }

    async fn drain_node(
        &self,
        req: Request<proto::NodeRef>,
    ) -> Result<Response<proto::NodeInfo>, Status> {
        let caller = self.access.of(&req).await?;
        authz::require_admin(&caller, "drain a node")?;
        let target = req.into_inner();
        if target.id == 0 && target.name.is_empty() {
            return Err(Status::invalid_argument(
                "DrainNode needs a node id or a node name",
            ));
        }
        let info = self
            .handle
            .call(|reply| Event::DrainNode { target, reply })
            .await?;
        Ok(Response::new(info))
    }

    async fn get_task_log(
        &self,
        req: Request<proto::TaskRef>,
    ) -> Result<Response<proto::TaskLog>, Status> {
        let caller = self.access.of(&req).await?;
        let r = req.into_inner();
        let key = flame_core::model::key(session_id(r.session_id)?, TaskId(r.task_id));
        self.access.session(&caller, key.session).await?;
        let text = self.reads.task_log(key).await?;
        Ok(Response::new(proto::TaskLog { text }))
    }

    async fn get_task(
        &self,
        req: Request<proto::TaskRef>,
    ) -> Result<Response<proto::TaskInfo>, Status> {
        let caller = self.access.of(&req).await?;
        let key = task_key(req.into_inner())?;
        self.access.session(&caller, key.session).await?;
        let (info, _log) = self.reads.task(key).await?;
        Ok(Response::new(info))
    }

    async fn list_tasks(
        &self,
        req: Request<proto::ListTasksRequest>,
    ) -> Result<Response<proto::TaskList>, Status> {
        let caller = self.access.of(&req).await?;
        let r = req.into_inner();
        let state =
            match r.state {
                0 => None,
                s => Some(TaskState::from_i32(s).map_err(|_| {
                    Status::invalid_argument(format!("state {s} is not a task state"))
                })?),
            };
        let query = TaskQuery {
            session: session_id(r.session_id)?,
            state,
            limit: page_size(r.limit)?,
            offset: u64::from(r.offset),
        };
        self.access.session(&caller, query.session).await?;
        let list = self.reads.tasks(query).await?;
        Ok(Response::new(list))
    }

    async fn list_executors(
        &self,
        req: Request<proto::Empty>,
    ) -> Result<Response<proto::ExecutorList>, Status> {
        let caller = self.access.of(&req).await?;
        let mut executors = self
            .handle
            .call(|reply| Event::ListExecutors { reply })
            .await?;
        if !caller.admin {
            // A user sees the executors working for its own sessions.
            let mut mine = Vec::with_capacity(executors.len());
            for e in executors {
                let session = SessionId(e.session_id);
                if e.session_id != 0 && self.access.session(&caller, session).await.is_ok() {
                    mine.push(e);
                }
            }
            executors = mine;
        }
        Ok(Response::new(proto::ExecutorList { executors }))
    }

    async fn cancel_task(
        &self,
        req: Request<proto::TaskRef>,
    ) -> Result<Response<proto::TaskInfo>, Status> {
        let caller = self.access.of(&req).await?;
        let key = task_key(req.into_inner())?;
        self.access.session(&caller, key.session).await?;
        let info = self
            .handle
            .call(|reply| Event::CancelTask { key, reply })
            .await?;
        Ok(Response::new(info))
    }

    type StreamStream = ServerStream;

    async fn stream(
        &self,
        req: Request<Streaming<proto::ClientMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // Checked before the first frame is read: nothing unauthenticated reaches the actor.
        let claim = access::claim(&req)?;
        let caller = self.access.caller(claim).await?;
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let client = req
            .metadata()
            .get(CLIENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        self.access.claim_client(&caller, client)?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Weak: the stream must still end when the actor lets go of it.
        let errors = tx.downgrade();
        if !self
            .handle
            .send(Event::ClientConnected { conn, client, tx })
        {
            return Err(FlameError::ShuttingDown.into());
        }
        let mut inbound = req.into_inner();
        let handle = self.handle.clone();
        let mut sessions = access::SessionGate::new(self.access.clone(), caller);
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if let Some(ev) = client_event(conn, m) {
                            if let Err(refused) = sessions.check(&ev).await {
                                if let Some(errors) = errors.upgrade() {
                                    let _ = errors.send(Err(refused));
                                }
                                break;
                            }
                            if !handle.send(ev) {
                                break;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(conn, error = %e, "client stream ended with an error");
                        super::report_unreadable(&errors, "task", &e);
                        break;
                    }
                }
            }
            handle.send(Event::ClientGone { conn });
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn delete_objects(
        &self,
        req: Request<proto::ObjectRefs>,
    ) -> Result<Response<proto::Empty>, Status> {
        let caller = self.access.of(&req).await?;
        let ids = req.into_inner().object_ids;
        let checked = directory::object_ids(&ids)?;
        for id in &ids {
            self.access.object(&caller, *id)?;
        }
        // Forgotten, and deleted by every node holding them.
        directory::delete(&self.handle, checked).await?;
        Ok(Response::new(proto::Empty {}))
    }

    // #12 (objects on nodes): the directory calls are in `directory.rs`.
    async fn locate_objects(
        &self,
        req: Request<proto::ObjectRefs>,
    ) -> Result<Response<proto::ObjectLocations>, Status> {
        directory::locate(&self.access, &self.handle, req).await
    }

    async fn place_object(
        &self,
        req: Request<proto::ObjectStored>,
    ) -> Result<Response<proto::ObjectHolder>, Status> {
        directory::place(&self.access, &self.handle, req).await
    }

    async fn list_objects(
        &self,
        req: Request<proto::ListObjectsRequest>,
    ) -> Result<Response<proto::ObjectList>, Status> {
        directory::list(&self.access, &self.handle, req).await
    }

    async fn authorize_objects(
        &self,
        req: Request<proto::ObjectAccess>,
    ) -> Result<Response<proto::ObjectAccessReply>, Status> {
        authorize::authorize_objects(&self.access, &self.asked_tokens, req)
    }

    // Security calls (#11): implemented in `admin`.
    async fn discover(
        &self,
        req: Request<proto::Empty>,
    ) -> Result<Response<proto::DiscoverReply>, Status> {
        admin::discover(&self.security, req).await
    }

    async fn join_node(
        &self,
        req: Request<proto::JoinRequest>,
    ) -> Result<Response<proto::JoinReply>, Status> {
        admin::join_node(&self.security, req).await
    }

    async fn create_token(
        &self,
        req: Request<proto::TokenSpec>,
    ) -> Result<Response<proto::TokenCreated>, Status> {
        admin::create_token(&self.security, req).await
    }

    async fn list_tokens(
        &self,
        req: Request<proto::Empty>,
    ) -> Result<Response<proto::TokenList>, Status> {
        admin::list_tokens(&self.security, req).await
    }

    async fn revoke_token(
        &self,
        req: Request<proto::TokenRef>,
    ) -> Result<Response<proto::TokenInfo>, Status> {
        admin::revoke_token(&self.security, &self.handle, req).await
    }

    async fn revoke_node(
        &self,
        req: Request<proto::NodeRef>,
    ) -> Result<Response<proto::RevokedNode>, Status> {
        admin::revoke_node(&self.security, &self.handle, req).await
    }
}

/// Turn one client message into an event; malformed messages are dropped with a log line
/// (a stream has no request to answer with an error, and one bad message must not end it).
fn client_event(conn: u64, m: proto::ClientMessage) -> Option<Event> {
    let ev = match m.msg {
        // A submit to session 0 still goes on: its tasks are answered as failed.
        Some(client_message::Msg::Submit(b)) => {
            // Reads go aside, for the few tasks that have any (no allocation otherwise).
            let mut reads = Vec::new();
            let tasks = b
                .tasks
                .into_iter()
                .filter(|t| t.task_id != 0)
                .map(|t| {
                    if !t.reads.is_empty() {
                        reads.push((TaskId(t.task_id), object_reads(&t.reads)));
                    }
                    (TaskId(t.task_id), t.input)
                })
                .collect();
            Event::Submit {
                conn,
                session: SessionId(b.session_id),
                tasks,
                reads,
            }
        }
        Some(client_message::Msg::Watch(w)) if w.session_id != 0 => Event::Watch {
            conn,
            session: SessionId(w.session_id),
            tasks: w.task_ids.into_iter().map(TaskId).collect(),
        },
        Some(client_message::Msg::Cancel(c)) if c.session_id != 0 => Event::Cancel {
            conn,
            session: SessionId(c.session_id),
            task: TaskId(c.task_id),
        },
        // #12: objects this client stored on a node (the actor checks they are its own).
        Some(client_message::Msg::Created(c)) if c.node_id != 0 => {
            Event::Objects(ObjectEvent::Created {
                conn,
                node: NodeId(c.node_id),
                objects: c
                    .objects
                    .into_iter()
                    .map(|o| (ObjectId(o.object_id), o.size))
                    .collect(),
                nested: c
                    .nested
                    .into_iter()
                    .map(|n| {
                        let ids = n.contains.into_iter().map(ObjectId).collect();
                        (ObjectId(n.container), ids)
                    })
                    .collect(),
            })
        }
        other => {
            tracing::warn!(conn, message = ?other.map(|_| "with session_id (or node_id) 0"), "malformed client message dropped");
            return None;
        }
    };
    Some(ev)
}

/// Objects named on the wire, with their sizes; id 0 names none and is left out.
fn object_reads(objects: &[proto::ObjectStored]) -> TaskReads {
    objects
        .iter()
        .filter(|o| o.object_id != 0)
        .map(|o| ObjectRead {
            id: ObjectId(o.object_id),
            size: o.size,
        })
        .collect()
}
