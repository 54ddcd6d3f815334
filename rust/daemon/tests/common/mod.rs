//! Helpers shared by the daemon's integration tests: a head and a node of echo executors on
//! 127.0.0.1, and opening sessions on them.
//! Each test crate includes this module and uses its own subset of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use flame_core::client::{Client, Credentials};
use flame_core::ids::{SessionId, TaskId};
use flame_core::model::SessionSpec;
use flame_core::proto;
use flame_daemon::executor_manager::NodeConfig;
use flame_daemon::http::HttpPort;
use flame_daemon::local::LocalCluster;
use flame_daemon::server::{Head, HeadConfig};
use flame_daemon::session_manager::ManagerConfig;

/// A head on 127.0.0.1 (a free port, no HTTP) with these tunables, its state in `state_dir`.
pub fn head_config(state_dir: &Path, manager: ManagerConfig) -> HeadConfig {
    HeadConfig {
        host: "127.0.0.1".into(),
        port: 0,
        state_dir: state_dir.to_path_buf(),
        state_url: None,
        manager,
        http: HttpPort::Off,
        tls: Default::default(),
        metrics_public: false,
    }
}

/// The credentials of the head's admin (what `flame.init()` uses for its embedded head).
pub fn admin(head: &Head) -> Credentials {
    Credentials::with_token(head.security.admin_token.to_string())
}

/// A client of `head` with its admin token, named `name`.
pub async fn admin_client(head: &Head, name: &str) -> Client {
    Client::connect(
        &head.address,
        &admin(head),
        std::time::Duration::from_secs(5),
        name,
    )
    .await
    .expect("client connects")
}

/// A node of `slots` echo executors (`flame-echo-executor`) working in `work_dir`.
pub fn echo_node(work_dir: &Path, slots: u32) -> NodeConfig {
    let mut node = NodeConfig::new("");
    node.slots = slots;
    node.executor_command = Some(vec![env!("CARGO_BIN_EXE_flame-echo-executor").into()]);
    node.work_dir = work_dir.to_path_buf();
    node
}

/// [`head_config`] and [`echo_node`], started.
pub async fn start_echo_cluster(
    state_dir: &Path,
    slots: u32,
    manager: ManagerConfig,
) -> LocalCluster {
    let node = echo_node(state_dir, slots);
    start_cluster(head_config(state_dir, manager), node)
        .await
        .expect("cluster starts")
}

/// Open a session with exactly this spec.
pub async fn create_session(client: &Client, spec: SessionSpec) -> SessionId {
    let req = proto::CreateSessionRequest {
        spec: Some(spec.into()),
    };
    let info = client.frontend().create_session(req).await.unwrap();
    SessionId(info.into_inner().id)
}

/// Open a session of the echo application (`flame-echo-executor`) with default options.
pub async fn open_echo_session(client: &Client) -> SessionId {
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        ..Default::default()
    };
    create_session(client, spec).await
}

/// One admin token per test process (#11), trusted by every head started through
/// [`start_head`] / [`start_cluster`] (each head also has its own random admin token), for
/// tests whose clients outlive one head.
pub fn test_token() -> &'static flame_core::auth::Token {
    static TOKEN: std::sync::OnceLock<flame_core::auth::Token> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        flame_core::auth::Token::generate(
            flame_core::auth::TokenKind::User,
            1 << 40,
            &"00".repeat(32),
        )
    })
}

/// Make `head` trust [`test_token`] (as the admin user `admin`).
pub fn trust_test_token(head: &flame_daemon::server::Head) {
    head.security.register(test_token(), "admin", true, 0);
}

/// [`flame_daemon::server::Head::start`], trusting [`test_token`].
pub async fn start_head(cfg: HeadConfig) -> flame_core::Result<flame_daemon::server::Head> {
    let head = flame_daemon::server::Head::start(cfg).await?;
    trust_test_token(&head);
    Ok(head)
}

/// [`LocalCluster::start`], trusting [`test_token`].
pub async fn start_cluster(head: HeadConfig, node: NodeConfig) -> flame_core::Result<LocalCluster> {
    let cluster = LocalCluster::start(head, node).await?;
    trust_test_token(&cluster.head);
    Ok(cluster)
}

/// Wait until every task in `ids` has completed, each exactly once; panics after 60 s.
pub async fn collect(client: &Client, ids: &[TaskId]) -> HashMap<u64, proto::TaskCompletion> {
    let mut done = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.len() < ids.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} done",
            done.len(),
            ids.len()
        );
        let batch = client
            .next_completions(Duration::from_millis(200))
            .await
            .expect("stream open");
        for c in batch {
            assert!(
                done.insert(c.task_id, c).is_none(),
                "a task completed twice"
            );
        }
    }
    done
}

/// After a head restart: every task of `first` (one finished "quick" before the restart,
/// then more) and `rest` succeeds, the finished one is kept rather than re-run, and the
/// session is still open with its 9 successes.
pub async fn assert_resumed(client: &Client, sid: SessionId, first: &[TaskId], rest: &[TaskId]) {
    let all: Vec<TaskId> = first.iter().chain(rest).copied().collect();
    client.watch(sid, all.clone()).unwrap();
    let done = collect(client, &all).await;
    assert!(done
        .values()
        .all(|c| c.state == flame_core::model::TaskState::Succeeded.as_i32()));
    assert_eq!(
        done[&first[0].0].output,
        Bytes::from_static(b"quick"),
        "kept, not re-run"
    );
    let info = client
        .frontend()
        .get_session(proto::SessionRef { session_id: sid.0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, proto::SessionState::SessionOpen as i32);
    assert_eq!(info.succeeded, 9);
}
