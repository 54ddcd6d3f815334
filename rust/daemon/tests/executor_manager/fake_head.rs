//! The fake session manager the node agent tests talk to: a `Backend` server on 127.0.0.1:0
//! that hands each `NodeStream` and `ExecutorStream` to the test, which plays the session
//! manager by hand — and can restart it on the same address, as a head restarting would.
//! `Harness` owns the fake, the node under test and the streams between them, and finds the
//! node's children through /proc by a per-test environment tag.

use std::collections::HashSet;
use std::time::Duration;

use flame_core::proto::backend_server::{Backend, BackendServer};
use flame_core::proto::{
    executor_message, node_command, node_message, ExecutorCommand, ExecutorExited, ExecutorMessage,
    NodeCommand, NodeMessage, NodeRegister,
};
use flame_daemon::executor_manager::{run_node, NodeConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(10);

pub type Commands<T> = mpsc::Sender<Result<T, Status>>;
/// An executor's id, its command sender and its inbound stream.
pub type ExecutorConn = (u64, Commands<ExecutorCommand>, Streaming<ExecutorMessage>);

struct FakeHead {
    nodes: mpsc::UnboundedSender<(Streaming<NodeMessage>, Commands<NodeCommand>)>,
    executors: mpsc::UnboundedSender<(Streaming<ExecutorMessage>, Commands<ExecutorCommand>)>,
}

#[tonic::async_trait]
impl Backend for FakeHead {
    type NodeStreamStream = ReceiverStream<Result<NodeCommand, Status>>;
    type ExecutorStreamStream = ReceiverStream<Result<ExecutorCommand, Status>>;

    async fn node_stream(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::NodeStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let _ = self.nodes.send((request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn executor_stream(
        &self,
        request: Request<Streaming<ExecutorMessage>>,
    ) -> Result<Response<Self::ExecutorStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let _ = self.executors.send((request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The fake session manager, the node under test, and the streams between them.
pub struct Harness {
    head_address: String,
    nodes: mpsc::UnboundedReceiver<(Streaming<NodeMessage>, Commands<NodeCommand>)>,
    executors: mpsc::UnboundedReceiver<(Streaming<ExecutorMessage>, Commands<ExecutorCommand>)>,
    /// Executors' inbound streams, held open: dropping one could break the executor's link.
    executor_streams: Vec<Streaming<ExecutorMessage>>,
    pub server_stop: CancellationToken,
    server: JoinHandle<()>,
    /// Servers replaced by [`Harness::restart`], still draining their open streams.
    retired: Vec<JoinHandle<()>>,
    tag: String,
    /// What `NodeRegistered` tells the node (0: no fencing, as from an older head).
    pub node_timeout_ms: u32,
    _work_dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(tag: &str) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let head_address = format!("http://{}", listener.local_addr().expect("addr"));
        let (nodes_tx, nodes) = mpsc::unbounded_channel();
        let (executors_tx, executors) = mpsc::unbounded_channel();
        let server_stop = CancellationToken::new();
        let server = serve(listener, nodes_tx, executors_tx, server_stop.clone());
        let work_dir = tempfile::tempdir().expect("tempdir");
        Harness {
            head_address,
            nodes,
            executors,
            executor_streams: Vec::new(),
            server_stop,
            server,
            retired: Vec::new(),
            tag: tag.into(),
            node_timeout_ms: 0,
            _work_dir: work_dir,
        }
    }

    /// A new fake session manager on the same address. The old one stops listening at once;
    /// the streams it has open stay up until either side ends them.
    pub async fn restart(&mut self) {
        self.server_stop.cancel();
        let address = self.head_address.trim_start_matches("http://").to_string();
        // The old listener closes when its server task next runs: retry until it has.
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(&address).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind {address}: {e}"),
            }
        };
        let (nodes_tx, nodes) = mpsc::unbounded_channel();
        let (executors_tx, executors) = mpsc::unbounded_channel();
        self.nodes = nodes;
        self.executors = executors;
        self.server_stop = CancellationToken::new();
        let server = serve(listener, nodes_tx, executors_tx, self.server_stop.clone());
        self.retired
            .push(std::mem::replace(&mut self.server, server));
    }

    pub fn config(&self, slots: u32, command: &[&str]) -> NodeConfig {
        NodeConfig {
            head: self.head_address.clone(),
            name: "test-node".into(),
            slots,
            python: "python3".into(),
            executor_command: Some(command.iter().map(|s| s.to_string()).collect()),
            work_dir: self._work_dir.path().join("executors"),
            env: vec![("FLAME_TEST_TAG".into(), self.tag.clone())],
            executor_memory_bytes: None,
            memory_bytes: None,
            bind: None,
            drain_grace: std::time::Duration::ZERO,
            credentials: flame_core::client::Credentials::none(),
            object_store_bytes: Some(1 << 20),
            object_shm_root: None,
            local_report: None,
            remote_fetch: None,
            object_port: 0,
            object_address: String::new(),
        }
    }

    /// Starts a node; returns its task, its shutdown token, and its registered stream.
    pub async fn node(
        &mut self,
        slots: u32,
        command: &[&str],
    ) -> (
        JoinHandle<flame_core::Result<()>>,
        CancellationToken,
        NodeConn,
    ) {
        self.node_with(self.config(slots, command), 1).await
    }

    /// Starts a node with `config` and registers it as `node_id`.
    pub async fn node_with(
        &mut self,
        config: NodeConfig,
        node_id: u64,
    ) -> (
        JoinHandle<flame_core::Result<()>>,
        CancellationToken,
        NodeConn,
    ) {
        let token = CancellationToken::new();
        let slots = config.slots;
        let task = tokio::spawn(run_node(config, token.clone()));
        let (node, register) = self.accept(node_id).await;
        assert_eq!(register.slots, slots);
        assert_eq!(register.previous_node_id, 0, "a first registration");
        (task, token, node)
    }

    /// Takes the next node stream, checks its `NodeRegister`, answers `NodeRegistered`.
    pub async fn accept(&mut self, node_id: u64) -> (NodeConn, NodeRegister) {
        let (inbound, commands) = within(self.nodes.recv()).await.expect("node stream");
        let mut node = NodeConn { inbound, commands };
        let register = match node.next().await {
            Some(node_message::Msg::Register(register)) => register,
            other => panic!("expected register, got {other:?}"),
        };
        assert_eq!(register.name, "test-node");
        assert!(register.memory_bytes > 0, "memory read from /proc/meminfo");
        node.send(node_command::Msg::Registered(
            flame_core::proto::NodeRegistered {
                node_id,
                heartbeat_ms: 50,
                node_timeout_ms: self.node_timeout_ms,
                state_id: String::new(),
            },
        ))
        .await;
        (node, register)
    }

    /// Waits for executor streams to register; returns their ids and command senders.
    pub async fn executors(&mut self, n: usize) -> Vec<(u64, Commands<ExecutorCommand>)> {
        let mut out = Vec::new();
        for (id, commands, inbound) in self.executor_conns(n).await {
            out.push((id, commands));
            self.executor_streams.push(inbound);
        }
        out
    }

    /// As [`Harness::executors`], but the executors' own streams go to the test too.
    pub async fn executor_conns(&mut self, n: usize) -> Vec<ExecutorConn> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (mut inbound, commands) = within(self.executors.recv())
                .await
                .expect("executor stream");
            match within(inbound.message()).await {
                Ok(Some(ExecutorMessage {
                    msg: Some(executor_message::Msg::Register(r)),
                })) => out.push((r.executor_id, commands, inbound)),
                other => panic!("expected executor register, got {other:?}"),
            }
        }
        out.sort_by_key(|(id, _, _)| *id);
        out
    }

    /// Pids of live (not zombie) processes that carry this test's tag.
    pub fn tagged_pids(&self) -> HashSet<u32> {
        let needle = format!("FLAME_TEST_TAG={}", self.tag);
        let mut pids = HashSet::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let tagged = environ
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes());
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'));
            if tagged && !zombie {
                pids.insert(pid);
            }
        }
        pids
    }

    /// Waits (up to [`WAIT`]) until no process carries this test's tag.
    pub async fn no_children_left(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.tagged_pids().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "children left behind: {:?}",
                self.tagged_pids()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        drop(self.executor_streams);
        self.server_stop.cancel();
        within(self.server).await.expect("server task");
        for server in self.retired {
            within(server).await.expect("retired server task");
        }
    }
}

fn serve(
    listener: tokio::net::TcpListener,
    nodes: mpsc::UnboundedSender<(Streaming<NodeMessage>, Commands<NodeCommand>)>,
    executors: mpsc::UnboundedSender<(Streaming<ExecutorMessage>, Commands<ExecutorCommand>)>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let serve = tonic::transport::Server::builder()
        .add_service(BackendServer::new(FakeHead { nodes, executors }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned());
    tokio::spawn(async move { serve.await.expect("serve") })
}

pub struct NodeConn {
    inbound: Streaming<NodeMessage>,
    commands: Commands<NodeCommand>,
}

impl NodeConn {
    pub async fn send(&self, msg: node_command::Msg) {
        self.commands
            .send(Ok(NodeCommand { msg: Some(msg) }))
            .await
            .expect("node stream open");
    }

    pub async fn next(&mut self) -> Option<node_message::Msg> {
        within(self.inbound.message())
            .await
            .expect("node stream error")
            .map(|m| m.msg.expect("body"))
    }

    /// The next exit report, skipping heartbeats; counts the heartbeats seen.
    pub async fn next_exit(&mut self, heartbeats: &mut usize) -> ExecutorExited {
        loop {
            match self.next().await {
                Some(node_message::Msg::Heartbeat(_)) => *heartbeats += 1,
                Some(node_message::Msg::Exited(e)) => return e,
                other => panic!("expected an exit report, got {other:?}"),
            }
        }
    }

    pub async fn spawn(&self, id: u64) {
        self.spawn_beyond(id, 0).await;
    }

    /// Spawn, allowing `beyond_slots` more than the node's slots (executors the head counts
    /// as blocked in nested waits).
    pub async fn spawn_beyond(&self, id: u64, beyond_slots: u32) {
        let python = "no-such-python-here".into();
        self.send(node_command::Msg::Spawn(flame_core::proto::SpawnExecutor {
            executor_id: id,
            python,
            beyond_slots,
        }))
        .await;
    }
}

pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}
