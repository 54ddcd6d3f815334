//! The head's credentials (#11) with a real head: Discover, the admin calls and who may
//! make them, joining nodes with join tokens (TLS and plaintext heads), revoking a node
//! while it runs a task, TLS on the gRPC and HTTP ports, the `tls` rule, and admin.token.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use flame_core::auth::{Principal, TokenKind};
use flame_core::client::Client;
use flame_core::model::{now_ms, SessionSpec};
use flame_core::proto::{self, frontend_client::FrontendClient};
use flame_core::tls::{client_tls, node_name_of, NodeKey};
use flame_daemon::executor_manager::run_node;
use flame_daemon::http::HttpPort;
use flame_daemon::local::LocalCluster;
use flame_daemon::rpc::admin;
use flame_daemon::security::tls_mode::{TlsMode, TlsSettings};
use flame_daemon::security::{Security, ADMIN_TOKEN_FILE};
use flame_daemon::server::{Head, HeadConfig};
use flame_daemon::session_manager::ManagerConfig;

fn config(dir: &std::path::Path, tls: TlsMode) -> HeadConfig {
    let mut cfg = common::head_config(dir, ManagerConfig::default());
    cfg.tls = TlsSettings {
        mode: tls,
        names: vec![],
    };
    cfg
}

async fn plain_client(address: &str) -> FrontendClient<Channel> {
    let channel = Endpoint::from_shared(address.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connects");
    FrontendClient::new(channel)
}

async fn tls_client(head: &Head) -> FrontendClient<Channel> {
    let ca = head.security.ca_pem().unwrap();
    let channel = Endpoint::from_shared(head.address.clone())
        .unwrap()
        .tls_config(client_tls(ca, "127.0.0.1", None))
        .unwrap()
        .connect()
        .await
        .expect("connects over TLS");
    FrontendClient::new(channel)
}

/// A request as the auth interceptor hands it on, from `principal`.
fn as_principal<T>(msg: T, principal: Principal) -> Request<T> {
    let mut req = Request::new(msg);
    req.extensions_mut().insert(principal);
    req
}

fn bob() -> Principal {
    Principal::User {
        name: "bob".into(),
        admin: false,
    }
}

fn root() -> Principal {
    Principal::User {
        name: "admin".into(),
        admin: true,
    }
}

#[tokio::test]
async fn discover_over_loopback_names_the_state_dir_and_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::start(config(dir.path(), TlsMode::Auto))
        .await
        .unwrap();
    assert!(
        head.address.starts_with("http://"),
        "loopback auto is plaintext"
    );
    let reply = plain_client(&head.address)
        .await
        .discover(proto::Empty {})
        .await
        .expect("Discover needs no credentials")
        .into_inner();
    assert!(!reply.tls);
    assert_eq!(reply.ca_fingerprint, head.security.ca_fingerprint);
    assert_eq!(reply.state_dir, dir.path().display().to_string());
    assert!(!reply.version.is_empty());
    head.stop().await;
}

#[tokio::test]
async fn admin_calls_refuse_non_admins_and_work_for_admins() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::start(config(dir.path(), TlsMode::Auto))
        .await
        .unwrap();
    let s: &Arc<Security> = &head.security;
    let spec = || proto::TokenSpec {
        kind: "user".into(),
        user: "alice".into(),
        admin: false,
        expires_in_secs: 0,
    };
    let err = admin::create_token(s, as_principal(spec(), bob()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "only an admin may create tokens; you are user bob"
    );
    let err = admin::list_tokens(s, as_principal(proto::Empty {}, bob()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = admin::revoke_token(
        s,
        &head.manager,
        as_principal(proto::TokenRef { id: 1 }, bob()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let target = proto::NodeRef {
        id: 0,
        name: "n".into(),
    };
    let err = admin::revoke_node(s, &head.manager, as_principal(target, bob()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // Without any principal (nothing authenticated the call) it is UNAUTHENTICATED.
    let err = admin::list_tokens(s, Request::new(proto::Empty {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    let created = admin::create_token(s, as_principal(spec(), root()))
        .await
        .unwrap()
        .into_inner();
    let info = created.info.unwrap();
    assert_eq!((info.kind.as_str(), info.name.as_str()), ("user", "alice"));
    assert_eq!(s.tokens.check(&created.token).unwrap().name, "alice");
    let listed = admin::list_tokens(s, as_principal(proto::Empty {}, root()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tokens.iter().any(|t| t.id == info.id));
    let revoked = admin::revoke_token(
        s,
        &head.manager,
        as_principal(proto::TokenRef { id: info.id }, root()),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(revoked.revoked_ms > 0);
    let err = s.tokens.check(&created.token).unwrap_err().to_string();
    assert!(err.contains("revoked"), "{err}");
    let bad = proto::TokenSpec {
        user: "al ice".into(),
        ..spec()
    };
    let err = admin::create_token(s, as_principal(bad, root()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    head.stop().await;
}

#[tokio::test]
async fn a_tls_head_signs_a_node_certificate_for_a_good_join_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::start(config(dir.path(), TlsMode::On)).await.unwrap();
    assert!(head.address.starts_with("https://"), "{}", head.address);
    let mut client = tls_client(&head).await;
    let discovered = client.discover(proto::Empty {}).await.unwrap().into_inner();
    assert!(discovered.tls);

    let s = &head.security;
    let join = s.issue_stored(TokenKind::Join, "", false, 0).unwrap();
    let key = NodeKey::generate();
    let request = |token: String| proto::JoinRequest {
        join_token: token,
        node_name: "worker-7".into(),
        csr_pem: key.csr_pem("worker-7"),
    };
    let reply = client
        .join_node(request(join.to_string()))
        .await
        .expect("a good join token joins")
        .into_inner();
    assert_eq!(reply.ca_pem, s.ca_pem().unwrap());
    let der = ::pem::parse(&reply.certificate_pem).unwrap();
    assert_eq!(node_name_of(der.contents()).as_deref(), Some("worker-7"));
    // Multi-use until it expires, as kubeadm's.
    client.join_node(request(join.to_string())).await.unwrap();

    let refused = |r: Result<tonic::Response<proto::JoinReply>, tonic::Status>| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e}");
        e.message().to_string()
    };
    let forged = flame_core::auth::Token::generate(TokenKind::Join, join.id, &s.ca_fingerprint);
    let msg = refused(client.join_node(request(forged.to_string())).await);
    assert!(msg.contains("not valid"), "{msg}");
    let old = s.issue_stored(TokenKind::Join, "", false, 1).unwrap();
    let msg = refused(client.join_node(request(old.to_string())).await);
    assert!(msg.contains("expired"), "{msg}");
    let gone = s.issue_stored(TokenKind::Join, "", false, 0).unwrap();
    s.revoke_token(gone.id).unwrap();
    let msg = refused(client.join_node(request(gone.to_string())).await);
    assert!(msg.contains("revoked"), "{msg}");
    let user = s.issue_stored(TokenKind::User, "alice", false, 0).unwrap();
    let msg = refused(client.join_node(request(user.to_string())).await);
    assert!(msg.contains("not a join token"), "{msg}");

    // A plaintext client gets no answer from a TLS head.
    let plain = head.address.replacen("https://", "http://", 1);
    let answer = async {
        let channel = Endpoint::from_shared(plain).unwrap().connect().await?;
        let r = FrontendClient::new(channel).discover(proto::Empty {}).await;
        Ok::<_, Box<dyn std::error::Error>>(r.is_ok())
    };
    let answered = tokio::time::timeout(Duration::from_secs(10), answer).await;
    assert!(
        !matches!(answered, Ok(Ok(true))),
        "a plaintext client was answered by a TLS head"
    );
    head.stop().await;
}

#[tokio::test]
async fn a_plaintext_head_answers_a_join_with_a_node_token() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::start(config(dir.path(), TlsMode::Off)).await.unwrap();
    let join = head
        .security
        .issue_stored(TokenKind::Join, "", false, now_ms() as u64 + 60_000)
        .unwrap();
    let reply = plain_client(&head.address)
        .await
        .join_node(proto::JoinRequest {
            join_token: join.to_string(),
            node_name: "n1".into(),
            csr_pem: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.certificate_pem.is_empty());
    let entry = head.security.tokens.check(&reply.node_token).unwrap();
    assert_eq!(
        entry.principal(),
        Some(Principal::Node { name: "n1".into() })
    );
    head.stop().await;
}

#[tokio::test]
async fn a_non_loopback_head_refuses_tls_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), TlsMode::Off);
    cfg.host = "0.0.0.0".into();
    let err = Head::start(cfg).await.err().expect("refused").to_string();
    assert!(
        err.contains("0.0.0.0 always uses TLS") && err.contains("tls = \"off\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_tls_head_serves_https_on_its_http_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), TlsMode::On);
    cfg.http = HttpPort::Exactly(0);
    let head = Head::start(cfg).await.unwrap();
    let url = head.dashboard_url.clone().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let config =
        flame_core::tls::client_rustls_config(head.security.ca_pem().unwrap(), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("the HTTP port speaks TLS with the cluster CA's certificate");
    tls.write_all(b"GET /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 "), "no HTTP answer over TLS");
    head.stop().await;
}

#[tokio::test]
async fn admin_token_is_private_and_stable_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ADMIN_TOKEN_FILE);
    let head = Head::start(config(dir.path(), TlsMode::Auto))
        .await
        .unwrap();
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(first, head.security.admin_token.to_string());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    head.stop().await;
    let head = Head::start(config(dir.path(), TlsMode::Auto))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    assert!(head.security.tokens.check(&first).unwrap().admin);
    head.stop().await;
}

/// RevokeNode while the node runs a task: the node is dropped at once (its executor is
/// gone when the call returns) and the task runs again on the other node, with no retry
/// allowed — so it must not be charged an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_node_drops_it_and_its_task_runs_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ManagerConfig {
        release_delay: Duration::from_millis(200),
        ..Default::default()
    };
    let mut a = common::echo_node(dir.path(), 1);
    a.name = "node-a".into();
    let cluster = LocalCluster::start(common::head_config(dir.path(), manager), a)
        .await
        .unwrap();
    let mut b = common::echo_node(dir.path(), 1);
    b.name = "node-b".into();
    b.head = cluster.address().to_string();
    let node_b_token = cluster
        .head
        .security
        .issue(TokenKind::Node, "node-b", false, 0);
    b.credentials = flame_core::client::Credentials::with_token(node_b_token.to_string());
    let stop_b = CancellationToken::new();
    let node_b = tokio::spawn(run_node(b, stop_b.clone()));
    let creds = common::admin(&cluster.head);
    let client = Client::connect(cluster.address(), &creds, Duration::from_secs(5), "test")
        .await
        .unwrap();
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        max_retries: 0,
        ..Default::default()
    };
    let sid = common::create_session(&client, spec).await;
    let ids = client
        .submit(sid, vec![Bytes::from_static(b"sleep:1500")])
        .unwrap();

    // Wait for the task to run, and find its executor and node.
    let mut front = client.frontend();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (executor, node_id) = loop {
        assert!(tokio::time::Instant::now() < deadline, "the task never ran");
        let list = front.list_executors(proto::Empty {}).await.unwrap();
        let busy = list
            .into_inner()
            .executors
            .into_iter()
            .find(|e| e.inflight > 0);
        if let Some(e) = busy {
            break (e.id, e.node_id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let info = front.get_cluster_info(proto::Empty {}).await.unwrap();
    let name = info
        .into_inner()
        .nodes
        .into_iter()
        .find(|n| n.id == node_id)
        .unwrap()
        .name;

    let target = proto::NodeRef {
        id: 0,
        name: name.clone(),
    };
    let security = cluster.head.security.clone();
    let revoked = admin::revoke_node(
        &security,
        &cluster.head.manager,
        as_principal(target, root()),
    )
    .await
    .expect("an admin revokes a connected node")
    .into_inner();
    assert_eq!(revoked.name, name);
    let list = front.list_executors(proto::Empty {}).await.unwrap();
    assert!(
        !list.into_inner().executors.iter().any(|e| e.id == executor),
        "the revoked node's executor {executor} is still there"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never finished"
        );
        let batch = client
            .next_completions(Duration::from_millis(200))
            .await
            .expect("stream open");
        if let Some(c) = batch.into_iter().next() {
            break c;
        }
    };
    assert_eq!(done.task_id, ids[0].0);
    assert!(done.error.is_none(), "the task failed: {:?}", done.error);
    assert_eq!(&done.output[..], b"sleep:1500");

    stop_b.cancel();
    let _ = node_b.await;
    drop(client);
    cluster.stop().await;
}
