//! Node agent tests against an in-process fake session manager on 127.0.0.1:0, with real
//! child processes (`flame-echo-executor`). The fake hands each `NodeStream` and
//! `ExecutorStream` to the test, which plays the session manager by hand — and can restart
//! it on the same address, as a head restarting would. One last test runs the real
//! `flame-daemon head` and `flame-daemon node` processes through a head restart.
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
    /// Executors' inbound streams, held open: dropping one could break the executor's link.
    executor_streams: Vec<Streaming<ExecutorMessage>>,
    server_stop: CancellationToken,
    server: JoinHandle<()>,
    /// Servers replaced by [`Harness::restart`], still draining their open streams.
    retired: Vec<JoinHandle<()>>,
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
            _work_dir: work_dir,
        }
    }

    /// A new fake session manager on the same address. The old one stops listening at once;
    /// the streams it has open stay up until either side ends them.
    async fn restart(&mut self) {
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

    fn config(&self, slots: u32, command: &[&str]) -> NodeConfig {
        NodeConfig {
            head: self.head_address.clone(),
            name: "test-node".into(),
            slots,
            python: "python3".into(),
            executor_command: Some(command.iter().map(|s| s.to_string()).collect()),
            work_dir: self._work_dir.path().join("executors"),
            env: vec![("FLAME_TEST_TAG".into(), self.tag.clone())],
            executor_memory_bytes: None,
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
        self.node_with(self.config(slots, command), 1).await
    }

    /// Starts a node with `config` and registers it as `node_id`.
    async fn node_with(
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
    async fn accept(&mut self, node_id: u64) -> (NodeConn, NodeRegister) {
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
            },
        ))
        .await;
        (node, register)
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
            self.executor_streams.push(inbound);
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

    /// Waits (up to [`WAIT`]) until no process carries this test's tag.
    async fn no_children_left(&self) {
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

    async fn stop(self) {
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
async fn the_node_outlives_a_head_restart_and_registers_again_under_its_id() {
    let mut h = Harness::start("head-restart").await;
    let config = h.config(4, &[ECHO]);
    let (task, token, node) = h.node_with(config, 42).await;
    node.spawn(1).await;
    node.spawn(2).await;
    let executors = h.executors(2).await;
    assert_eq!(h.tagged_pids().len(), 2);

    // The head restarts on the same address; the old one ends the node's stream.
    h.restart().await;
    drop(node);
    // The old fake still holds the executors' streams open, so they would not leave by
    // themselves: the node stops them, and only then registers again.
    let (node, register) = h.accept(42).await;
    assert_eq!(register.previous_node_id, 42, "asks for the id it had");
    assert!(
        h.tagged_pids().is_empty(),
        "children kept across the head's restart: {:?}",
        h.tagged_pids()
    );
    assert!(!task.is_finished(), "the node keeps running");

    // It serves the new head as before.
    node.spawn(3).await;
    let three = h.executors(1).await;
    assert_eq!(three[0].0, 3);
    assert_eq!(h.tagged_pids().len(), 1);

    let stopping = std::time::Instant::now();
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert!(
        h.tagged_pids().is_empty(),
        "children left behind: {:?}",
        h.tagged_pids()
    );
    drop((node, executors, three));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_head_is_gone_retries_until_shut_down() {
    let mut h = Harness::start("head-down").await;
    let (task, token, node) = h.node(2, &[ECHO]).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;

    // The head goes away for good: its stream breaks and nothing listens any more.
    h.server_stop.cancel();
    drop((node, executors));
    h.no_children_left().await;
    // Several refused attempts later the node is still waiting for a head.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished(), "the node gave up on its head");

    // Shutdown is noticed in the middle of a backoff.
    let stopping = std::time::Instant::now();
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    assert!(
        stopping.elapsed() < Duration::from_millis(500),
        "stopped in {:?}",
        stopping.elapsed()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_over_the_memory_limit_is_killed_and_reported() {
    let mut h = Harness::start("memory").await;
    let config = NodeConfig {
        executor_memory_bytes: Some(64 << 20),
        ..h.config(1, &[ECHO])
    };
    let (task, token, mut node) = h.node_with(config, 1).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;
    let commands = &executors[0].1;
    let bind = executor_command::Msg::Bind(flame_core::proto::BindSession {
        session_id: 1,
        application: "echo".into(),
        ..Default::default()
    });
    let tasks = executor_command::Msg::Tasks(flame_core::proto::TaskBatch {
        session_id: 1,
        tasks: vec![flame_core::proto::TaskAssignment {
            task_id: 1,
            input: b"alloc:200".to_vec().into(),
            attempt: 1,
        }],
    });
    for msg in [bind, tasks] {
        let command = ExecutorCommand { msg: Some(msg) };
        commands.send(Ok(command)).await.expect("executor stream");
    }

    // The executor would hold 200 MiB for 10 s; the node kills it long before.
    let started = std::time::Instant::now();
    let exit = node.next_exit(&mut 0).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (exit.executor_id, exit.exit_code, exit.signal),
        (1, -1, libc::SIGKILL)
    );
    let first = exit.stderr_tail.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("killed by flame: memory limit of 64 MiB exceeded (resident ")
            && first.ends_with(" MiB)"),
        "{}",
        exit.stderr_tail
    );
    assert!(h.tagged_pids().is_empty());

    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    drop((node, executors));
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

/// A `flame-daemon` process, killed if a test fails with it still running.
struct Daemon(std::process::Child);

impl Daemon {
    fn spawn(command: &mut std::process::Command) -> Daemon {
        Daemon(command.spawn().expect("flame-daemon"))
    }

    /// SIGTERM, then its exit status.
    async fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain syscall on a child not reaped yet (`Drop` is the only other reaper).
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still running after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `flame-daemon head` on `port`, once it listens.
fn start_head(port: u16, state_dir: &std::path::Path) -> Daemon {
    use std::io::BufRead;
    let mut head = Daemon::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_flame-daemon"))
            .args(["head", "--port", &port.to_string(), "--state-dir"])
            .arg(state_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
    );
    let mut line = String::new();
    let stdout = head.0.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    assert!(line.starts_with("flame-daemon listening on"), "{line:?}");
    head
}

/// The live nodes (id, name) the head at `address` knows, once there is one.
async fn live_nodes(client: &flame_core::client::Client) -> Vec<(u64, String)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = client
            .frontend()
            .get_cluster_info(flame_core::proto::Empty {})
            .await
            .expect("cluster info")
            .into_inner();
        let live: Vec<_> = info
            .nodes
            .into_iter()
            .filter(|n| n.alive)
            .map(|n| (n.id, n.name))
            .collect();
        if !live.is_empty() {
            return live;
        }
        assert!(tokio::time::Instant::now() < deadline, "no node joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens an echo session on the head; its id.
async fn echo_session(client: &flame_core::client::Client) -> flame_core::ids::SessionId {
    let spec = flame_core::proto::SessionSpec {
        application: "echo".into(),
        app_spec: b"inline".to_vec().into(),
        ..Default::default()
    };
    let request = flame_core::proto::CreateSessionRequest { spec: Some(spec) };
    let session = client.frontend().create_session(request).await;
    flame_core::ids::SessionId(session.expect("session").into_inner().id)
}

/// Runs one task through the head; its completion.
async fn run_task(
    client: &flame_core::client::Client,
    session: flame_core::ids::SessionId,
    input: &'static [u8],
) -> flame_core::proto::TaskCompletion {
    let input = prost::bytes::Bytes::from_static(input);
    let ids = client.submit(session, vec![input]).expect("submit");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let batch = client.next_completions(Duration::from_millis(200)).await;
        let batch = batch.expect("completion stream open");
        if let Some(done) = batch.into_iter().find(|c| c.task_id == ids[0].0) {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "task not done");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_process_rejoins_a_restarted_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let address = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("state");
    // The file's command is overridden by the flag; its memory limit applies.
    let config = dir.path().join("node.toml");
    let toml = "executor_command = [\"/nonexistent\", \"-x\"]\nexecutor_memory_mb = 64\n";
    std::fs::write(&config, toml).expect("config file");
    let log = dir.path().join("node.log");
    let mut head = start_head(port, &state);
    let mut node = Daemon::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_flame-daemon"))
            .args([
                "node", "--head", &address, "--slots", "1", "--name", "rejoin",
            ])
            .args(["--executor-command", ECHO, "--config"])
            .arg(&config)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).expect("log file")),
    );
    let client = flame_core::client::Client::connect(&address, WAIT, "node-test")
        .await
        .expect("client");
    let before = live_nodes(&client).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].1, "rejoin");
    drop(client);

    assert!(head.stop().await.success());
    let mut head = start_head(port, &state);
    let client = flame_core::client::Client::connect(&address, WAIT, "node-test")
        .await
        .expect("client");
    assert_eq!(
        live_nodes(&client).await,
        before,
        "the same node, under its id"
    );
    assert!(
        node.0.try_wait().expect("node status").is_none(),
        "node still up"
    );

    // It runs executors for the new head, under the configured memory limit.
    let session = echo_session(&client).await;
    let hello = run_task(&client, session, b"hello").await;
    assert_eq!(hello.output.as_ref(), b"hello");
    let leak = run_task(&client, session, b"alloc:200").await;
    assert_ne!(
        leak.output.as_ref(),
        b"alloc:200",
        "the leaking task did not finish"
    );
    let log_text = std::fs::read_to_string(&log).expect("node log");
    assert!(
        log_text.contains("killed by flame: memory limit of 64 MiB exceeded"),
        "{log_text}"
    );
    drop(client);

    let status = node.stop().await;
    assert!(status.success(), "{status:?}");
    assert!(head.stop().await.success());
}
