//! The head's Unix socket (`head.sock` in its state dir) for the executors of its own node:
//! with a TLS head, the local node's executors run their task streams over the socket, not
//! over TCP + TLS; the socket is the head's OS user's only and authenticates like the port.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use flame_core::client::{Client, Transport, HEAD_SOCKET_ENV};
use flame_core::model::SessionSpec;
use flame_core::proto::{self, frontend_client::FrontendClient};
use flame_daemon::local::LocalCluster;
use flame_daemon::local_socket::SOCKET_FILE;
use flame_daemon::security::tls_mode::{TlsMode, TlsSettings};
use flame_daemon::session_manager::ManagerConfig;
use tonic::{Code, Request};

/// The pids of this process's children whose name starts with `prefix`.
fn children(prefix: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if comm.starts_with(prefix) && ppid == Some(&me.to_string()) {
            pids.push(pid);
        }
    }
    pids
}

/// The socket inodes `pid` holds open.
fn socket_inodes(pid: u32) -> Vec<String> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.push(inode.to_string());
            }
        }
    }
    inodes
}

/// The inodes listed in `/proc/net/<table>` (column `col`).
fn table_inodes(table: &str, col: usize) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(col).map(str::to_string))
        .collect()
}

fn tls_head(dir: &Path) -> flame_daemon::server::HeadConfig {
    let manager = ManagerConfig {
        release_delay: Duration::from_millis(200),
        ..Default::default()
    };
    let mut cfg = common::head_config(dir, manager);
    cfg.tls = TlsSettings {
        mode: TlsMode::On,
        names: vec![],
    };
    cfg
}

/// Connect with the admin token (TLS), run one echo task and check its output.
async fn run_one_task(cluster: &LocalCluster) -> Client {
    let client = Client::connect(
        cluster.address(),
        &common::admin(&cluster.head),
        Duration::from_secs(5),
        "test",
    )
    .await
    .expect("client connects over TLS");
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        ..Default::default()
    };
    let sid = common::create_session(&client, spec).await;
    let ids = client.submit(sid, vec![Bytes::from_static(b"hi")]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never finished"
        );
        let batch = client.next_completions(Duration::from_millis(200)).await;
        if let Some(c) = batch.expect("stream open").into_iter().next() {
            break c;
        }
    };
    assert_eq!(done.task_id, ids[0].0);
    assert_eq!(done.output, Bytes::from_static(b"hi"));
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_nodes_executors_stream_over_the_socket_not_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::start_cluster(tls_head(dir.path()), common::echo_node(dir.path(), 1))
        .await
        .expect("cluster starts");
    assert!(
        cluster.address().starts_with("https://"),
        "{}",
        cluster.address()
    );
    let client = run_one_task(&cluster).await;

    // The executor that ran it is connected, and over a Unix socket only.
    let executors = children("flame-echo");
    assert_eq!(
        executors.len(),
        1,
        "one echo executor expected: {executors:?}"
    );
    let held = socket_inodes(executors[0]);
    let tcp: Vec<String> = ["tcp", "tcp6"]
        .iter()
        .flat_map(|t| table_inodes(t, 9))
        .collect();
    let unix = table_inodes("unix", 6);
    let over_tcp: Vec<&String> = held.iter().filter(|i| tcp.contains(i)).collect();
    assert!(
        over_tcp.is_empty(),
        "the executor holds TCP sockets {over_tcp:?}: it did not use the head's socket"
    );
    assert!(
        held.iter().any(|i| unix.contains(i)),
        "the executor holds no Unix socket: {held:?}"
    );
    client.close();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_authenticated_and_removed_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let head = common::start_head(tls_head(dir.path())).await.unwrap();
    let path = dir.path().join(SOCKET_FILE);
    assert_eq!(head.local_socket.as_deref(), Some(path.as_path()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "head.sock mode {mode:o}");

    let channel = Transport::socket_endpoint(&path.display().to_string())
        .unwrap()
        .connect()
        .await
        .expect("connects to head.sock");
    let mut front = FrontendClient::new(channel);
    // No token: refused, as on the TCP port.
    let refused = front.list_executors(proto::Empty {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // A wrong token: refused by the interceptor.
    let mut req = Request::new(proto::Empty {});
    let bad = "Bearer flame_user_1_00_00".parse().unwrap();
    req.metadata_mut().insert("authorization", bad);
    let refused = front.list_executors(req).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // The admin token: accepted.
    let mut req = Request::new(proto::Empty {});
    let bearer = head.security.admin_token.bearer().parse().unwrap();
    req.metadata_mut().insert("authorization", bearer);
    front
        .list_executors(req)
        .await
        .expect("the admin token is accepted");

    head.stop().await;
    assert!(!path.exists(), "head.sock is left behind");
}

/// No socket (a state dir path too long for one) and an executor told of a socket that is
/// not there: the head runs without it, the executor uses the TCP port, the task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_socket_executors_use_the_tcp_port() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s".repeat(120));
    let mut node = common::echo_node(dir.path(), 1);
    let missing = dir.path().join("missing.sock").display().to_string();
    node.env.push((HEAD_SOCKET_ENV.to_string(), missing));
    let cluster = common::start_cluster(tls_head(&state), node)
        .await
        .expect("cluster starts");
    assert_eq!(cluster.head.local_socket, None);
    let client = run_one_task(&cluster).await;
    client.close();
    cluster.stop().await;
}

/// A client of the head's user on its machine moves its task stream to `head.sock` after
/// its hello over TLS, and tasks run over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_user_client_of_a_tls_head_moves_to_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::start_cluster(tls_head(dir.path()), common::echo_node(dir.path(), 1))
        .await
        .expect("cluster starts");
    let client = run_one_task(&cluster).await;
    let path = dir.path().join(SOCKET_FILE).display().to_string();
    assert_eq!(client.task_stream_socket(), Some(path.as_str()));
    assert!(
        client.transport().is_tls(),
        "unary calls stay on the TLS address"
    );
    client.close();
    cluster.stop().await;
}

/// The hello over TCP of `head`, as its admin.
async fn tcp_hello(head: &flame_daemon::server::Head) -> (Transport, proto::HelloReply) {
    let transport = Transport::resolve(&head.address, &common::admin(head), Duration::from_secs(5))
        .await
        .unwrap();
    let channel = transport.channel(Duration::from_secs(5)).await.unwrap();
    let mut req = Request::new(proto::HelloRequest {
        client_name: "probe".into(),
        previous_client_id: 0,
    });
    req.metadata_mut()
        .insert("authorization", transport.bearer().unwrap().clone());
    let reply = FrontendClient::new(channel).hello(req).await.unwrap();
    (transport, reply.into_inner())
}

/// A socket that leads to another head (another state), or that is not a socket of this
/// user in a private directory, is not used: the client stays on TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_of_another_head_or_a_planted_path_is_not_used() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = common::start_head(tls_head(a_dir.path())).await.unwrap();
    let b = common::start_head(tls_head(b_dir.path())).await.unwrap();
    let (transport, reply) = tcp_hello(&a).await;
    let own = reply.head_socket.clone();
    assert_eq!(own, a_dir.path().join(SOCKET_FILE).display().to_string());
    let adopted = flame_core::client::local_socket::adopt(&transport, &reply, "probe").await;
    assert!(adopted.is_some(), "head A's own socket is used");

    let mut other = reply.clone();
    other.head_socket = b_dir.path().join(SOCKET_FILE).display().to_string();
    let adopted = flame_core::client::local_socket::adopt(&transport, &other, "probe").await;
    assert!(adopted.is_none(), "head B's socket was taken for head A");

    // A link to A's socket in a directory anyone may write: not a socket, not private.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = open.path().join("head.sock");
    std::os::unix::fs::symlink(&own, &link).unwrap();
    let mut planted = reply.clone();
    planted.head_socket = link.display().to_string();
    let adopted = flame_core::client::local_socket::adopt(&transport, &planted, "probe").await;
    assert!(
        adopted.is_none(),
        "a symlink in a world-writable dir was used"
    );
    a.stop().await;
    b.stop().await;
}
