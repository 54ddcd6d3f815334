//! A real `flame-daemon node` process against a real `flame-daemon head` process: the node
//! outlives a restart of the head, registers again under its id, and runs executors for the
//! new head under the memory limit from its config file.

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const ECHO: &str = env!("CARGO_BIN_EXE_flame-echo-executor");

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
    // The head's own admin token (README "Security"), and a join token made with it.
    let admin = std::fs::read_to_string(state.join("admin.token")).expect("admin.token");
    let admin = flame_core::client::Credentials::with_token(admin.trim().to_string());
    let client = flame_core::client::Client::connect(&address, &admin, WAIT, "node-test")
        .await
        .expect("client");
    let join = client
        .frontend()
        .create_token(flame_core::proto::TokenSpec {
            kind: "join".into(),
            expires_in_secs: 600,
            ..Default::default()
        })
        .await
        .expect("a join token")
        .into_inner()
        .token;
    drop(client);
    let mut node = Daemon::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_flame-daemon"))
            .args([
                "node",
                "--head",
                &address,
                "--slots",
                "1",
                "--name",
                "rejoin",
                "--join-token",
                &join,
            ])
            .arg("--state-dir")
            .arg(dir.path().join("node-state"))
            .args(["--executor-command", ECHO, "--config"])
            .arg(&config)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).expect("log file")),
    );
    let client = flame_core::client::Client::connect(&address, &admin, WAIT, "node-test")
        .await
        .expect("client");
    let before = live_nodes(&client).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].1, "rejoin");
    drop(client);

    assert!(head.stop().await.success());
    let mut head = start_head(port, &state);
    let client = flame_core::client::Client::connect(&address, &admin, WAIT, "node-test")
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
