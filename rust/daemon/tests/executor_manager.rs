//! Node agent tests against an in-process fake session manager on 127.0.0.1:0, with real
//! child processes (`flame-echo-executor`). The fake hands each `NodeStream` and
//! `ExecutorStream` to the test, which plays the session manager by hand.
//!
//! Children of this test process are found through /proc by a per-test environment tag, so
//! the tests can check that a stopped node leaves none behind even while others run alongside.

use std::collections::HashSet;
use std::time::Duration;

use flame_core::proto::backend_server::{Backend, BackendServer};
use flame_core::proto::{
    executor_command, executor_message, node_command, node_message, ExecutorCommand,
    ExecutorExited, ExecutorMessage, NodeCommand, NodeMessage, NodeRegister,
};
use flame_daemon::executor_manager::{run_node, NodeConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);
const ECHO: &str = env!("CARGO_BIN_EXE_flame-echo-executor");

type Commands<T> = mpsc::Sender<Result<T, Status>>;

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
struct Harness {
    head_address: String,
    nodes: mpsc::UnboundedReceiver<(Streaming<NodeMessage>, Commands<NodeCommand>)>,
    executors: mpsc::UnboundedReceiver<(Streaming<ExecutorMessage>, Commands<ExecutorCommand>)>,
    server_stop: CancellationToken,
    server: JoinHandle<()>,
    tag: String,
    _work_dir: tempfile::TempDir,
}

impl Harness {
    async fn start(tag: &str) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let head_address = format!("http://{}", listener.local_addr().expect("addr"));
        let (nodes_tx, nodes) = mpsc::unbounded_channel();
        let (executors_tx, executors) = mpsc::unbounded_channel();
        let server_stop = CancellationToken::new();
        let serve = tonic::transport::Server::builder()
            .add_service(BackendServer::new(FakeHead {
                nodes: nodes_tx,
                executors: executors_tx,
            }))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                server_stop.clone().cancelled_owned(),
            );
        let server = tokio::spawn(async move { serve.await.expect("serve") });
        let work_dir = tempfile::tempdir().expect("tempdir");
        Harness {
            head_address,
            nodes,
            executors,
            server_stop,
            server,
            tag: tag.into(),
            _work_dir: work_dir,
        }
    }

    fn config(&self, slots: u32, command: &[&str]) -> NodeConfig {
        NodeConfig {
            head: self.head_address.clone(),
            name: "test-node".into(),
            slots,
            python: "python3".into(),
            executor_command: Some(command.iter().map(|s| s.to_string()).collect()),
            work_dir: self._work_dir.path().join("executors"),
            env: vec![("FLAME_TEST_TAG".into(), self.tag.clone())],
        }
    }

    /// Starts a node; returns its task, its shutdown token, and its registered stream.
    async fn node(
        &mut self,
        slots: u32,
        command: &[&str],
    ) -> (
        JoinHandle<flame_core::Result<()>>,
        CancellationToken,
        NodeConn,
    ) {
        let token = CancellationToken::new();
        let task = tokio::spawn(run_node(self.config(slots, command), token.clone()));
        let (inbound, commands) = within(self.nodes.recv()).await.expect("node stream");
        let mut node = NodeConn { inbound, commands };
        match node.next().await {
            Some(node_message::Msg::Register(NodeRegister {
                name,
                slots: s,
                memory_bytes,
                ..
            })) => {
                assert_eq!((name.as_str(), s), ("test-node", slots));
                assert!(memory_bytes > 0, "memory read from /proc/meminfo");
            }
            other => panic!("expected register, got {other:?}"),
        }
        node.send(node_command::Msg::Registered(
            flame_core::proto::NodeRegistered {
                node_id: 1,
                heartbeat_ms: 50,
            },
        ))
        .await;
        (task, token, node)
    }

    /// Waits for executor streams to register; returns their ids and command senders.
    async fn executors(&mut self, n: usize) -> Vec<(u64, Commands<ExecutorCommand>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (mut inbound, commands) = within(self.executors.recv())
                .await
                .expect("executor stream");
            match within(inbound.message()).await {
                Ok(Some(ExecutorMessage {
                    msg: Some(executor_message::Msg::Register(r)),
                })) => out.push((r.executor_id, commands)),
                other => panic!("expected executor register, got {other:?}"),
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Pids of live (not zombie) processes that carry this test's tag.
    fn tagged_pids(&self) -> HashSet<u32> {
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

    async fn stop(self) {
        self.server_stop.cancel();
        within(self.server).await.expect("server task");
    }
}

struct NodeConn {
    inbound: Streaming<NodeMessage>,
    commands: Commands<NodeCommand>,
}

impl NodeConn {
    async fn send(&self, msg: node_command::Msg) {
        self.commands
            .send(Ok(NodeCommand { msg: Some(msg) }))
            .await
            .expect("node stream open");
    }

    async fn next(&mut self) -> Option<node_message::Msg> {
        within(self.inbound.message())
            .await
            .expect("node stream error")
            .map(|m| m.msg.expect("body"))
    }

    /// The next exit report, skipping heartbeats; counts the heartbeats seen.
    async fn next_exit(&mut self, heartbeats: &mut usize) -> ExecutorExited {
        loop {
            match self.next().await {
                Some(node_message::Msg::Heartbeat(_)) => *heartbeats += 1,
                Some(node_message::Msg::Exited(e)) => return e,
                other => panic!("expected an exit report, got {other:?}"),
            }
        }
    }

    async fn spawn(&self, id: u64) {
        let python = "no-such-python-here".into();
        self.send(node_command::Msg::Spawn(flame_core::proto::SpawnExecutor {
            executor_id: id,
            python,
        }))
        .await;
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

fn shutdown_cmd() -> ExecutorCommand {
    let reason = "test".into();
    ExecutorCommand {
        msg: Some(executor_command::Msg::Shutdown(
            flame_core::proto::Shutdown { reason },
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spawns_kills_refuses_and_reaps_executors() {
    let mut h = Harness::start("spawn-kill").await;
    let (task, token, mut node) = h.node(2, &[ECHO]).await;
    let mut heartbeats = 0;

    node.spawn(1).await;
    node.spawn(2).await;
    node.spawn(3).await;
    // Two slots: the third is refused at once, reported as an exit.
    let refused = node.next_exit(&mut heartbeats).await;
    assert_eq!(
        (refused.executor_id, refused.exit_code, refused.signal),
        (3, -1, 0)
    );
    assert!(
        refused.stderr_tail.contains("slots"),
        "{}",
        refused.stderr_tail
    );
    let executors = h.executors(2).await;
    assert_eq!(
        executors.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(h.tagged_pids().len(), 2);

    node.send(node_command::Msg::Kill(flame_core::proto::KillExecutor {
        executor_id: 1,
        reason: "test".into(),
    }))
    .await;
    let killed = node.next_exit(&mut heartbeats).await;
    assert_eq!(
        (killed.executor_id, killed.exit_code, killed.signal),
        (1, -1, libc::SIGKILL)
    );

    // An executor told to shut down exits by itself, with code 0.
    executors[1]
        .1
        .send(Ok(shutdown_cmd()))
        .await
        .expect("executor 2 stream");
    let clean = node.next_exit(&mut heartbeats).await;
    assert_eq!(
        (clean.executor_id, clean.exit_code, clean.signal),
        (2, 0, 0)
    );

    // Freed slots are usable again.
    node.spawn(4).await;
    let _four = h.executors(1).await;
    let pids = h.tagged_pids();
    assert_eq!(pids.len(), 1);
    assert!(heartbeats > 0 || matches!(node.next().await, Some(node_message::Msg::Heartbeat(_))));

    token.cancel();
    // The node reports what it stopped while the stream is still up, then ends its side.
    let stopped = node.next_exit(&mut heartbeats).await;
    assert_eq!((stopped.executor_id, stopped.signal), (4, libc::SIGTERM));
    while let Some(msg) = node.next().await {
        assert!(matches!(msg, node_message::Msg::Heartbeat(_)), "{msg:?}");
    }
    drop(node);
    within(task).await.expect("node task").expect("clean stop");
    assert!(
        h.tagged_pids().is_empty(),
        "children left behind: {:?}",
        h.tagged_pids()
    );
    drop((executors, _four));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn head_ending_the_stream_stops_the_node_and_its_children() {
    let mut h = Harness::start("head-gone").await;
    let (task, _token, node) = h.node(4, &[ECHO]).await;
    node.spawn(1).await;
    node.spawn(2).await;
    let executors = h.executors(2).await;
    let pids = h.tagged_pids();
    assert_eq!(pids.len(), 2);

    // The fake keeps the executors' own streams open, so they would not leave by themselves.
    drop(node);
    within(task)
        .await
        .expect("node task")
        .expect("a clean end is not an error");
    assert!(
        h.tagged_pids().is_empty(),
        "children left behind: {:?}",
        h.tagged_pids()
    );
    drop(executors);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_is_reported_as_an_exit() {
    let mut h = Harness::start("no-binary").await;
    let (task, token, mut node) = h.node(1, &["/nonexistent/flame-executor"]).await;
    node.spawn(9).await;
    let exit = node.next_exit(&mut 0).await;
    assert_eq!((exit.executor_id, exit.exit_code), (9, -1));
    assert!(
        exit.stderr_tail.contains("failed to start"),
        "{}",
        exit.stderr_tail
    );
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    drop(node);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chatty_child_is_drained_and_its_stderr_tail_reported() {
    let mut h = Harness::start("chatty").await;
    // ~1.3 MB on stderr: far past a pipe buffer, so an undrained pipe would block the child.
    let script = "seq 1 200000 >&2; echo done; exit 3";
    let (task, token, mut node) = h.node(1, &["sh", "-c", script]).await;
    node.spawn(5).await;
    let exit = node.next_exit(&mut 0).await;
    assert_eq!((exit.executor_id, exit.exit_code, exit.signal), (5, 3, 0));
    let tail: Vec<&str> = exit.stderr_tail.lines().collect();
    assert_eq!(tail.len(), 50);
    assert_eq!((tail[0], tail[49]), ("199951", "200000"));
    token.cancel();
    drop(node);
    within(task).await.expect("node task").expect("clean stop");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_while_the_head_is_unreachable_returns_promptly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let work_dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig {
        work_dir: work_dir.path().into(),
        ..NodeConfig::new(address)
    };
    let token = CancellationToken::new();
    let task = tokio::spawn(run_node(config, token.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel();
    within(task)
        .await
        .expect("node task")
        .expect("shutdown before registering is not an error");
}
