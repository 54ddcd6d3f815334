//! A client never re-attaches to someone else's session. The head's state has an identity
//! (made with its database) that the client learns in its hello and sends with every call:
//! when the head comes back on another state (the state dir deleted, ids starting again at
//! 1), the client's outstanding tasks fail with `ClusterStateLost` and nothing it sends
//! reaches the new state. And a session's tasks are streamed only to the client that opened
//! it.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::ids::SessionId;
use flame_core::model::{ErrorKind, SessionSpec, TaskState};
use flame_core::proto::{self, TaskCompletion};
use flame_core::FlameError;
use flame_daemon::server::{Head, HeadConfig};
use flame_daemon::session_manager::ManagerConfig;

/// A head without nodes: submitted tasks stay pending, which is all these tests need.
async fn head(state_dir: &Path, port: u16) -> Head {
    common::start_head(HeadConfig {
        host: "127.0.0.1".into(),
        port,
        state_dir: state_dir.to_path_buf(),
        state_url: None,
        manager: ManagerConfig::default(),
        http: flame_daemon::http::HttpPort::Off,
        tls: Default::default(),
        metrics_public: false,
    })
    .await
    .expect("head starts")
}

/// A client with the test token, which every head of these tests trusts (the tokens of a
/// head's own state would not open the other: these tests are about the state check).
async fn client(head: &Head, name: &str) -> Client {
    let creds = flame_core::client::Credentials::with_token(common::test_token().to_string());
    Client::connect_with(
        &head.address,
        &creds,
        Duration::from_secs(5),
        name,
        Duration::from_secs(30),
    )
    .await
    .expect("client connects")
}

/// A session owned by `client`, as the Python client opens them.
async fn open(client: &Client, application: &str) -> SessionId {
    let spec = SessionSpec {
        application: application.into(),
        app_spec: Bytes::from_static(b"{}"),
        owner: client.client_id().0,
        ..Default::default()
    };
    common::create_session(client, spec).await
}

/// The next completions, waiting up to 20 s for the first.
async fn next(client: &Client) -> Vec<TaskCompletion> {
    let batch = client
        .next_completions(Duration::from_secs(20))
        .await
        .expect("stream open");
    assert!(!batch.is_empty(), "no completion within 20 s");
    batch
}

fn failure(c: &TaskCompletion) -> (ErrorKind, String) {
    assert_eq!(c.state, TaskState::Failed.as_i32(), "{c:?}");
    let e = c.error.clone().expect("a failure");
    (ErrorKind::try_from(e.kind).unwrap(), e.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_never_reattaches_to_a_session_of_another_state() {
    let first_dir = tempfile::tempdir().unwrap();
    let first = head(first_dir.path(), 0).await;
    let port = first.local_addr.port();
    let a = client(&first, "a").await;
    let a_session = open(&a, "a-app").await;
    let a_task = a
        .submit(a_session, vec![Bytes::from_static(b"10")])
        .unwrap()[0];
    first.manager.shutdown().await; // nothing lost on A's side: its task is outstanding
    first.stop().await;

    // The state dir is gone; a head on a fresh one, same port, hands out the same ids.
    drop(first_dir);
    let second_dir = tempfile::tempdir().unwrap();
    let second = head(second_dir.path(), port).await;
    let c = client(&second, "c").await;
    assert_eq!(c.client_id(), a.client_id(), "ids start again at 1");
    let c_session = open(&c, "c-app").await;
    assert_eq!(
        c_session, a_session,
        "the same session id, someone else's session"
    );

    // A's outstanding task fails with ClusterStateLost; it is never watched or resubmitted
    // into C's session.
    let done = next(&a).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].task_id, a_task.0);
    let (kind, message) = failure(&done[0]);
    assert_eq!(kind, ErrorKind::ErrorClusterStateLost, "{message}");
    assert!(message.contains("another state"), "{message}");
    assert!(a.state_lost().is_some());

    // Every later call of A fails the same way, and none reaches C's session.
    let err = a
        .submit(a_session, vec![Bytes::from_static(b"10")])
        .unwrap_err();
    assert!(matches!(err, FlameError::ClusterStateLost(_)), "{err}");
    // The unary channel notices the old connection is gone on its first call after the
    // restart (CANCELLED / UNAVAILABLE) and reconnects by itself; the answer after that counts.
    let mut tries = 0;
    let close = loop {
        let r = a
            .frontend()
            .close_session(proto::SessionRef {
                session_id: a_session.0,
            })
            .await
            .unwrap_err();
        tries += 1;
        if !matches!(r.code(), tonic::Code::Cancelled | tonic::Code::Unavailable) || tries == 5 {
            break r;
        }
    };
    assert!(
        matches!(
            FlameError::from(close.clone()),
            FlameError::ClusterStateLost(_)
        ),
        "{close:?}"
    );
    let info = c
        .frontend()
        .get_session(proto::SessionRef {
            session_id: c_session.0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, proto::SessionState::SessionOpen as i32);
    assert_eq!(info.pending, 0, "nothing of A's reached C's session");
    assert_eq!(info.spec.unwrap().application, "c-app");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_client_that_opened_a_session_submits_to_it_or_watches_it() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path(), 0).await;
    let owner = client(&head, "owner").await;
    let other = client(&head, "other").await;
    let session = open(&owner, "mine").await;
    let task = owner
        .submit(session, vec![Bytes::from_static(b"x")])
        .unwrap()[0];

    let refused = |batch: Vec<TaskCompletion>| {
        assert_eq!(batch.len(), 1, "{batch:?}");
        let (kind, message) = failure(&batch[0]);
        assert_eq!(kind, ErrorKind::ErrorSessionNotFound);
        assert!(
            message.contains(&format!("belongs to client {}", owner.client_id().0)),
            "{message}"
        );
    };
    other
        .submit(session, vec![Bytes::from_static(b"y")])
        .unwrap();
    refused(next(&other).await);
    other.watch(session, vec![task]).unwrap();
    refused(next(&other).await);

    // Closed, the session is answered from storage: still only for its owner.
    owner
        .frontend()
        .close_session(proto::SessionRef {
            session_id: session.0,
        })
        .await
        .unwrap();
    other.watch(session, vec![task]).unwrap();
    refused(next(&other).await);
    head.stop().await;
}
