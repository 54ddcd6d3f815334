//! The session manager: one actor task that owns all scheduling state.
//!
//! RPC handlers never touch state; they send an [`Event`] to the actor and, for unary calls,
//! await a oneshot reply. The actor processes events one at a time (draining whatever is
//! queued before it runs the scheduler once), carries out the scheduler's actions, and writes
//! durable state through the [`StorageWriter`](crate::storage_writer::StorageWriter). No lock
//! is held anywhere, so nothing can be held across an `.await`.

mod actor;
mod apply;
mod events;
mod introspection;
mod lineage;
mod nested;
mod nodes;
mod object_answers;
mod objects;
mod overview;
mod ownership;
mod refusal;
mod retention;
mod revocation;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use flame_core::ids::{ExecutorId, NodeId, SessionId, TaskId, TaskKey};
use flame_core::model::{ApplicationRecord, SessionSpec};
use flame_core::proto;
use flame_core::Result;

pub use actor::start;
pub(crate) use apply::closed_info;
pub use introspection::LiveView;
pub use objects::{NodeObjects, ObjectEvent, StoreStats};
pub use overview::Overview;

/// Outbound stream to one client connection.
pub type ClientTx = mpsc::UnboundedSender<Result<proto::ServerMessage, Status>>;
/// Outbound stream to one executor.
pub type ExecutorTx = mpsc::UnboundedSender<Result<proto::ExecutorCommand, Status>>;
/// Outbound stream to one node.
pub type NodeTx = mpsc::UnboundedSender<Result<proto::NodeCommand, Status>>;

type Reply<T> = oneshot::Sender<Result<T>>;

/// Tunables of the session manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Tasks sent ahead to one executor, at least.
    pub window: usize,
    /// Tasks sent ahead to one executor at most, when its session's tasks are very short.
    pub window_max: usize,
    /// How long an idle executor stays bound to its session (the release delay).
    pub release_delay: Duration,
    /// Which scheduling policies are on.
    pub policies: flame_core::scheduler::Policies,
    /// Data-aware policy: how long a task that reads objects waits for an executor on a
    /// node holding them before it goes anywhere.
    pub data_wait: Duration,
    /// Interval at which nodes send heartbeats.
    pub heartbeat: Duration,
    /// A node silent for this long is declared lost.
    pub node_timeout: Duration,
    /// Largest task input or output accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Consecutive executor start-up failures after which a session's tasks fail.
    pub max_startup_failures: u32,
    /// How long a client may be gone (no open stream) before the sessions it owns are closed.
    pub client_lease: Duration,
    /// On a graceful stop, how long running tasks get to finish before executors are stopped.
    pub drain_grace: Duration,
    /// An executor that answers no heartbeat for this long is lost and killed (zero: never).
    pub executor_timeout: Duration,
    /// How long a closed session's tasks, results and logs are kept before they are deleted.
    pub result_retention: Duration,
    /// A task result larger than this stays in its executor's node store and travels by
    /// reference (#12); 0 = always inline.
    pub result_object_bytes: u64,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            window: 2,
            window_max: 64,
            release_delay: Duration::from_secs(2),
            policies: Default::default(),
            data_wait: Duration::from_millis(100),
            heartbeat: Duration::from_millis(1000),
            node_timeout: Duration::from_secs(5),
            max_payload_bytes: 256 << 20,
            max_startup_failures: 3,
            client_lease: Duration::from_secs(60),
            drain_grace: Duration::from_secs(10),
            executor_timeout: Duration::from_secs(5),
            result_retention: Duration::from_secs(3600),
            result_object_bytes: 1 << 20,
        }
    }
}

/// Everything that can happen to the session manager.
pub enum Event {
    // ------------------------------------------------------------ frontend
    Hello {
        previous: u32,
        reply: Reply<u32>,
    },
    RegisterApplication {
        app: ApplicationRecord,
        reply: Reply<()>,
    },
    GetApplication {
        name: String,
        reply: Reply<ApplicationRecord>,
    },
    ListApplications {
        reply: Reply<Vec<ApplicationRecord>>,
    },
    CreateSession {
        spec: SessionSpec,
        reply: Reply<proto::SessionInfo>,
    },
    CloseSession {
        id: SessionId,
        reply: Reply<proto::SessionInfo>,
    },
    ClusterInfo {
        reply: Reply<proto::ClusterInfo>,
    },
    ListExecutors {
        reply: Reply<Vec<proto::ExecutorInfo>>,
    },
    /// Everything the dashboard's overview shows, from memory only.
    Overview {
        reply: Reply<Overview>,
    },
    /// The unary cancel: answers the task as it is once the cancellation is stored.
    CancelTask {
        key: TaskKey,
        reply: Reply<proto::TaskInfo>,
    },
    /// What memory knows of a session (or of all open ones) for an introspection read,
    /// answered once the writes queued before it are committed (see `crate::reads`).
    LiveView {
        session: Option<SessionId>,
        reply: Reply<LiveView>,
    },
    ClientConnected {
        conn: u64,
        /// The client id the stream announced (0: none; the stream holds no lease).
        client: u32,
        tx: ClientTx,
    },
    ClientGone {
        conn: u64,
    },
    Submit {
        conn: u64,
        session: SessionId,
        tasks: Vec<(TaskId, Bytes)>,
        /// The objects some of these tasks read (#12; most tasks read none).
        reads: Vec<(TaskId, flame_core::scheduler::TaskReads)>,
    },
    Watch {
        conn: u64,
        session: SessionId,
        tasks: Vec<TaskId>,
    },
    /// Internal: storage has never seen these watched tasks; the client will resubmit them.
    WatchedUnknown {
        conn: u64,
        session: SessionId,
        looked_up: Vec<TaskId>,
        tasks: Vec<TaskId>,
    },
    Cancel {
        conn: u64,
        session: SessionId,
        task: TaskId,
    },
    // ------------------------------------------------------------ backend
    NodeConnected {
        register: proto::NodeRegister,
        /// The address the node's stream came from (`ip:port`), empty when unknown.
        peer: String,
        tx: NodeTx,
        reply: Reply<NodeId>,
    },
    NodeHeartbeat {
        node: NodeId,
        memory_available: u64,
    },
    /// The node itself asked to be drained (it got SIGTERM).
    NodeDraining {
        node: NodeId,
    },
    /// An operator asked to drain a node, by id (non-zero) or name.
    DrainNode {
        target: proto::NodeRef,
        reply: Reply<proto::NodeInfo>,
    },
    NodeGone {
        node: NodeId,
    },
    ExecutorExited {
        node: NodeId,
        exited: proto::ExecutorExited,
    },
    ExecutorConnected {
        id: ExecutorId,
        tx: ExecutorTx,
        reply: Reply<()>,
    },
    ExecutorGone {
        id: ExecutorId,
    },
    SessionEntered {
        executor: ExecutorId,
        entered: proto::SessionEntered,
    },
    SessionLeft {
        executor: ExecutorId,
        session: SessionId,
    },
    Results {
        executor: ExecutorId,
        results: Vec<proto::TaskResult>,
    },
    /// An executor's running task started or stopped waiting on other tasks (`blocked`,
    /// `None`: unchanged), and gave back the tasks of `session` in `returned`, unrun.
    ExecutorWaiting {
        executor: ExecutorId,
        blocked: Option<bool>,
        session: SessionId,
        returned: Vec<TaskId>,
    },
    /// A task running on `executor` opened `session`: it is closed when that process ends.
    NestedSession {
        executor: ExecutorId,
        session: SessionId,
    },
    // ------------------------------------------------------------ lifecycle
    /// Tell executors to stop, flush storage, and end the actor.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    // ------------------------------------------------------------ backend (heartbeats)
    /// The executor answered no heartbeat for `silent`: its tasks go elsewhere, it is killed.
    ExecutorUnresponsive {
        id: ExecutorId,
        silent: Duration,
    },
    // ------------------------------------------------------------ security
    /// A node's credentials were revoked (`RevokeNode`): drop every connected node of that
    /// name now, as if lost (`revocation.rs`); answers how many were connected.
    DropNode {
        name: String,
        reason: String,
        reply: Reply<u32>,
    },
    /// Where an executor runs and whose session it serves (`None`: no such executor), for
    /// the authorization of its node's calls.
    ExecutorPlace {
        id: ExecutorId,
        reply: Reply<Option<crate::security::authz::ExecutorPlace>>,
    },
    // ------------------------------------------------------------ objects (#12)
    /// Objects on nodes: announcements, node reports, directory questions (`objects.rs`).
    Objects(ObjectEvent),
}

/// Cheap handle for RPC handlers to reach the actor.
#[derive(Clone)]
pub struct ManagerHandle {
    tx: mpsc::UnboundedSender<Event>,
    pub config: ManagerConfig,
    /// This daemon's metrics (its own recorder; see `crate::metrics`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The identity of the state this head serves (made with its database): clients learn
    /// it in the hello and send it with every later call; see `rpc::state_check`.
    pub state_id: Arc<str>,
}

impl ManagerHandle {
    /// Send an event; `false` if the actor has stopped.
    pub fn send(&self, ev: Event) -> bool {
        self.tx.send(ev).is_ok()
    }

    /// Send an event built around a reply channel and wait for the answer.
    ///
    /// # Errors
    /// `ShuttingDown` if the actor stopped before answering; otherwise the actor's own error.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Event) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err(flame_core::FlameError::ShuttingDown);
        }
        rx.await.map_err(|_| flame_core::FlameError::ShuttingDown)?
    }

    /// Ask the actor to stop executors and flush storage; returns once it has.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Event::Shutdown { reply: tx }) {
            let _ = rx.await;
        }
    }
}
