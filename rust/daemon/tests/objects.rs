//! The head's object calls on loopback: chunked upload and download, bad ids refused, and
//! the lifetime rules — objects survive a restart of the head, and the objects of a client
//! that stays away are deleted when its lease runs out.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use flame_core::client::{Client, ObjectClient};
use flame_core::ids::ObjectId;
use flame_core::FlameError;
use flame_daemon::server::{Head, HeadConfig};
use flame_daemon::session_manager::ManagerConfig;

async fn head(state_dir: &Path, lease: Duration) -> Head {
    head_on(state_dir, lease, 0).await
}

async fn head_on(state_dir: &Path, lease: Duration, port: u16) -> Head {
    common::start_head(HeadConfig {
        host: "127.0.0.1".into(),
        port,
        state_dir: state_dir.to_path_buf(),
        manager: ManagerConfig {
            client_lease: lease,
            ..Default::default()
        },
        http: flame_daemon::http::HttpPort::Off,
        tls: Default::default(),
        metrics_public: false,
    })
    .await
    .expect("head starts")
}

async fn client(head: &Head) -> Client {
    Client::connect(
        &head.address,
        &flame_core::client::Credentials::with_token(head.security.admin_token.to_string()),
        Duration::from_secs(5),
        "objects-test",
    )
    .await
    .expect("client connects")
}

/// 3.5 MiB of a recognisable pattern: several chunks, the last one partial.
fn payload() -> Vec<u8> {
    (0..(7 << 19)).map(|i: u32| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_in_chunks_and_bad_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path(), Duration::from_secs(60)).await;
    let client = client(&head).await;
    let (object_dir, token) = client.object_dir();
    assert!(Path::new(object_dir).join("token").exists());
    assert_eq!(
        std::fs::read_to_string(Path::new(object_dir).join("token")).unwrap(),
        token
    );

    let objects = client.objects();
    let id = client.next_object_id().unwrap();
    let data = payload();
    let (a, b) = data.split_at(1000); // parts are concatenated
    let parts = vec![Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)];
    assert_eq!(objects.put(id, parts).await.unwrap(), data.len() as u64);
    assert_eq!(objects.get(id).await.unwrap(), data);

    // An executor elsewhere connects without a hello.
    let remote = ObjectClient::connect(
        &head.address,
        &flame_core::client::Credentials::with_token(head.security.admin_token.to_string()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(remote.get(id).await.unwrap().len(), data.len());

    let empty = client.next_object_id().unwrap();
    objects.put(empty, vec![]).await.unwrap();
    assert!(objects.get(empty).await.unwrap().is_empty());

    objects.delete(&[id, id]).await.unwrap();
    let gone = objects.get(id).await.unwrap_err();
    assert!(matches!(gone, FlameError::NotFound(_)), "{gone}");
    assert!(gone.to_string().contains(&format!("{:#x}", id.0)), "{gone}");

    let ownerless = objects.put(ObjectId(5), vec![Bytes::from_static(b"x")]);
    let err = ownerless.await.unwrap_err();
    assert!(matches!(err, FlameError::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("owning client"), "{err}");
    head.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_outlive_a_restart_but_not_their_clients_lease() {
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_millis(1500);
    let first = head(dir.path(), lease).await;
    let port = first.local_addr.port();
    let stays = client(&first).await;
    let leaves = client(&first).await;
    let kept = stays.next_object_id().unwrap();
    let dropped = leaves.next_object_id().unwrap();
    for (c, id) in [(&stays, kept), (&leaves, dropped)] {
        c.objects()
            .put(id, vec![Bytes::from_static(b"value")])
            .await
            .unwrap();
    }
    drop(leaves);
    first.stop().await;

    // Same state dir and port: both objects are still there, the token did not change, and
    // the client that stays reconnects under its id.
    let second = head_on(dir.path(), lease, port).await;
    let reader = client(&second).await;
    assert_eq!(reader.object_dir().1, stays.object_dir().1);
    let objects = reader.objects();
    assert_eq!(objects.get(dropped).await.unwrap(), b"value");

    // The client that left never comes back: its object goes when its lease runs out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while objects.get(dropped).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "object never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(lease).await;
    assert_eq!(objects.get(kept).await.unwrap(), b"value");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_object_id_cannot_be_overwritten_by_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path(), Duration::from_secs(60)).await;
    let owner = client(&head).await;
    let id = owner.next_object_id().unwrap();
    let data = payload();
    owner
        .objects()
        .put(id, vec![Bytes::from(data.clone())])
        .await
        .unwrap();
    // The owner itself, and a caller without a hello, both get ALREADY_EXISTS.
    let remote = ObjectClient::connect(
        &head.address,
        &flame_core::client::Credentials::with_token(head.security.admin_token.to_string()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    for objects in [owner.objects(), remote] {
        let err = objects
            .put(id, vec![Bytes::from_static(b"replacement")])
            .await
            .unwrap_err();
        assert!(matches!(err, FlameError::AlreadyExists(_)), "{err}");
        assert!(err.to_string().contains(&format!("{:#x}", id.0)), "{err}");
        assert!(err.to_string().contains("already stored"), "{err}");
    }
    assert_eq!(owner.objects().get(id).await.unwrap(), data, "unchanged");
    head.stop().await;
}
