//! Authentication and authorization on a real head (#11): calls without valid credentials
//! are UNAUTHENTICATED before anything is read; a user reaches only its own sessions, tasks,
//! logs and objects; `user=` cannot claim another user; node tokens use only the Backend,
//! under their own name. Every call here carries its token explicitly (raw stubs), so which
//! credential a call had is never in doubt.

mod common;

use std::time::Duration;

use flame_core::auth::{TokenKind, AUTHORIZATION_HEADER};
use flame_core::proto::{self, backend_client::BackendClient, frontend_client::FrontendClient};
use flame_daemon::local::LocalCluster;
use flame_daemon::session_manager::ManagerConfig;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Longest a refusal may take: far below the 10 s a stream waits for its first frame.
const PROMPT: Duration = Duration::from_secs(3);

async fn cluster(dir: &std::path::Path) -> LocalCluster {
    let node = common::echo_node(dir, 1);
    LocalCluster::start(common::head_config(dir, ManagerConfig::default()), node)
        .await
        .expect("cluster starts")
}

async fn channel(c: &LocalCluster) -> Channel {
    Channel::from_shared(c.address().to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `msg` with `authorization: <bearer>` (none when `None`).
fn req<T>(bearer: Option<&str>, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(b) = bearer {
        r.metadata_mut()
            .insert(AUTHORIZATION_HEADER, b.parse().unwrap());
    }
    r
}

fn refused<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needle: &str) {
    let s = r.expect_err("refused");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(s.message().contains(needle), "{needle:?} not in {s:?}");
}

/// A stream that never yields a frame: a refusal that arrives anyway was decided before
/// reading one.
fn silent<T: Send + 'static>() -> impl tokio_stream::Stream<Item = T> + Send + 'static {
    tokio_stream::pending()
}

fn echo_spec(user: &str) -> proto::CreateSessionRequest {
    proto::CreateSessionRequest {
        spec: Some(proto::SessionSpec {
            application: "echo".into(),
            app_spec: bytes::Bytes::from_static(b"inline"),
            user: user.into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_valid_credentials_are_unauthenticated_before_any_frame() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let sec = &c.head.security;
    let wrong = flame_core::auth::Token::generate(TokenKind::User, 2, &sec.ca_fingerprint);
    let expired = sec.issue(TokenKind::User, "alice", false, 1);
    let revoked = sec.issue(TokenKind::User, "alice", false, 0);
    sec.tokens.revoke(revoked.id);
    let ch = channel(&c).await;
    let mut fe = FrontendClient::new(ch.clone());
    let mut be = BackendClient::new(ch);
    let cases = [
        (None, "no credentials"),
        (Some(wrong.bearer()), "is not valid"),
        (Some(expired.bearer()), "expired at"),
        (Some(revoked.bearer()), "revoked at"),
    ];
    for (bearer, why) in cases {
        let b = bearer.as_deref();
        refused(
            fe.list_sessions(req(b, proto::Empty {})).await,
            Code::Unauthenticated,
            why,
        );
        refused(
            fe.hello(req(b, proto::HelloRequest::default())).await,
            Code::Unauthenticated,
            why,
        );
        let stream = tokio::time::timeout(PROMPT, fe.stream(req(b, silent())));
        refused(stream.await.expect("prompt"), Code::Unauthenticated, why);
        let put = tokio::time::timeout(PROMPT, fe.put_object(req(b, silent())));
        refused(put.await.expect("prompt"), Code::Unauthenticated, why);
        let node = tokio::time::timeout(PROMPT, be.node_stream(req(b, silent())));
        refused(node.await.expect("prompt"), Code::Unauthenticated, why);
        let exec = tokio::time::timeout(PROMPT, be.executor_stream(req(b, silent())));
        refused(exec.await.expect("prompt"), Code::Unauthenticated, why);
    }
    c.stop().await;
}

/// Submit one echo task to `session` as `bearer` and wait for its completion.
async fn run_task(fe: &mut FrontendClient<Channel>, bearer: &str, session: u64) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(proto::ClientMessage {
        msg: Some(proto::client_message::Msg::Submit(proto::SubmitBatch {
            session_id: session,
            tasks: vec![proto::TaskSubmission {
                task_id: 1,
                input: bytes::Bytes::from_static(b"hi"),
            }],
        })),
    })
    .unwrap();
    let rx = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let mut out = fe.stream(req(Some(bearer), rx)).await.unwrap().into_inner();
    let done = tokio::time::timeout(Duration::from_secs(30), out.next()).await;
    let msg = done.expect("a completion").expect("one").expect("ok");
    assert!(
        matches!(msg.msg, Some(proto::server_message::Msg::Completions(_))),
        "{msg:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reaches_only_its_own_sessions_tasks_logs_and_objects() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let sec = &c.head.security;
    let alice = sec.issue(TokenKind::User, "alice", false, 0).bearer();
    let bob = sec.issue(TokenKind::User, "bob", false, 0).bearer();
    let admin = sec.admin_token.bearer();
    let (a, b) = (Some(alice.as_str()), Some(bob.as_str()));
    let mut fe = FrontendClient::new(channel(&c).await);

    let info = fe.create_session(req(a, echo_spec(""))).await.unwrap();
    let info = info.into_inner();
    assert_eq!(
        info.spec.as_ref().unwrap().user,
        "alice",
        "owned by its opener"
    );
    let sid = info.id;
    run_task(&mut fe, &alice, sid).await;

    let sref = || proto::SessionRef { session_id: sid };
    let tref = || proto::TaskRef {
        session_id: sid,
        task_id: 1,
    };
    let not_yours = format!("session {sid} belongs to user alice; you are bob");
    let pd = Code::PermissionDenied;
    refused(fe.get_session(req(b, sref())).await, pd, &not_yours);
    refused(fe.get_task(req(b, tref())).await, pd, &not_yours);
    refused(fe.get_task_log(req(b, tref())).await, pd, &not_yours);
    refused(fe.cancel_task(req(b, tref())).await, pd, &not_yours);
    let list = proto::ListTasksRequest {
        session_id: sid,
        ..Default::default()
    };
    refused(fe.list_tasks(req(b, list)).await, pd, &not_yours);
    refused(fe.close_session(req(b, sref())).await, pd, &not_yours);
    let listed = |r: Result<tonic::Response<proto::SessionList>, Status>| {
        r.unwrap().into_inner().sessions.iter().any(|s| s.id == sid)
    };
    assert!(!listed(fe.list_sessions(req(b, proto::Empty {})).await));
    assert!(listed(fe.list_sessions(req(a, proto::Empty {})).await));
    assert!(listed(
        fe.list_sessions(req(Some(&admin), proto::Empty {})).await
    ));
    fe.get_task_log(req(a, tref())).await.unwrap();
    fe.get_session(req(Some(&admin), sref())).await.unwrap();

    // Bob's stream naming alice's session is ended with the refusal.
    let watch = proto::ClientMessage {
        msg: Some(proto::client_message::Msg::Watch(proto::Watch {
            session_id: sid,
            task_ids: vec![1],
        })),
    };
    let frames = tokio_stream::iter(vec![watch]).chain(silent());
    let mut out = fe.stream(req(b, frames)).await.unwrap().into_inner();
    let end = tokio::time::timeout(PROMPT, out.next())
        .await
        .expect("prompt");
    refused(end.expect("an answer"), pd, &not_yours);

    // Objects belong to the user of the client that made them.
    let hello = proto::HelloRequest::default();
    let client = fe
        .hello(req(a, hello))
        .await
        .unwrap()
        .into_inner()
        .client_id;
    let oid = (u64::from(client) << 32) | 1;
    let chunk = proto::ObjectChunk {
        object_id: oid,
        data: bytes::Bytes::from_static(b"secret"),
    };
    let put = fe.put_object(req(a, tokio_stream::iter(vec![chunk.clone()])));
    put.await.unwrap();
    let theirs = format!("object {oid:#x} belongs to user alice; you are bob");
    let get = fe
        .get_object(req(b, proto::ObjectRef { object_id: oid }))
        .await;
    refused(get, pd, &theirs);
    let del = proto::ObjectRefs {
        object_ids: vec![oid],
    };
    refused(fe.delete_objects(req(b, del)).await, pd, &theirs);
    let overwrite = fe.put_object(req(b, tokio_stream::iter(vec![chunk])));
    refused(overwrite.await, pd, &theirs);
    let mut mine = fe
        .get_object(req(a, proto::ObjectRef { object_id: oid }))
        .await;
    let first = mine
        .as_mut()
        .unwrap()
        .get_mut()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first.data[..], b"secret");
    // Nor can bob take over alice's client id at a hello.
    let steal = proto::HelloRequest {
        previous_client_id: client,
        ..Default::default()
    };
    refused(fe.hello(req(b, steal)).await, pd, "belongs to user alice");

    // Alice may close her own session.
    fe.close_session(req(a, sref())).await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_names_another_user_or_drains_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let sec = &c.head.security;
    let alice = sec.issue(TokenKind::User, "alice", false, 0).bearer();
    let bob = sec.issue(TokenKind::User, "bob", false, 0).bearer();
    let admin = sec.admin_token.bearer();
    let mut fe = FrontendClient::new(channel(&c).await);
    refused(
        fe.create_session(req(Some(&alice), echo_spec("bob"))).await,
        Code::PermissionDenied,
        "user='bob' names another user; you are alice (only an admin may set user=)",
    );
    let info = fe.create_session(req(Some(&admin), echo_spec("bob"))).await;
    let info = info.unwrap().into_inner();
    assert_eq!(info.spec.as_ref().unwrap().user, "bob");
    let sref = proto::SessionRef {
        session_id: info.id,
    };
    fe.get_session(req(Some(&bob), sref)).await.unwrap();
    let node = proto::NodeRef {
        name: "anything".into(),
        ..Default::default()
    };
    refused(
        fe.drain_node(req(Some(&alice), node)).await,
        Code::PermissionDenied,
        "only an admin may drain a node",
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_use_only_the_backend_under_their_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let sec = &c.head.security;
    let n1 = sec.issue(TokenKind::Node, "n1", false, 0).bearer();
    let alice = sec.issue(TokenKind::User, "alice", false, 0).bearer();
    let ch = channel(&c).await;
    let mut fe = FrontendClient::new(ch.clone());
    let mut be = BackendClient::new(ch);
    let pd = Code::PermissionDenied;
    refused(
        fe.list_sessions(req(Some(&n1), proto::Empty {})).await,
        pd,
        "node certificates can use only the Backend",
    );
    // With an executor header, only for an executor the head placed on that node.
    let mut r = req(Some(&n1), proto::Empty {});
    r.metadata_mut().insert(
        flame_core::client::EXECUTOR_ID_HEADER,
        "999".parse().unwrap(),
    );
    refused(
        fe.list_sessions(r).await,
        pd,
        "executor 999 does not run on node n1",
    );
    let user_on_backend = be.node_stream(req(Some(&alice), silent()));
    let user_on_backend = tokio::time::timeout(PROMPT, user_on_backend).await.unwrap();
    refused(user_on_backend, pd, "user alice cannot use it");
    let register = proto::NodeMessage {
        msg: Some(proto::node_message::Msg::Register(proto::NodeRegister {
            name: "n2".into(),
            slots: 1,
            ..Default::default()
        })),
    };
    let frames = tokio_stream::iter(vec![register]).chain(silent());
    let impostor = be.node_stream(req(Some(&n1), frames));
    let impostor = tokio::time::timeout(PROMPT, impostor).await.unwrap();
    refused(impostor, pd, "node n1 tried to register as 'n2'");
    c.stop().await;
}
