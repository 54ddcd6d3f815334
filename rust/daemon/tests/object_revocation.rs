//! Revocations reach the nodes' object servers (#12): a node remembers the head's answer
//! about a token for a minute (`AuthorizeObjects`, see `node_objects::gate`), so a user token
//! it has just said yes to must still be refused as soon as an admin revokes it at the head —
//! the head tells every node to forget its answers (`NodeCommand.access_revoked`).
//!
//! A real head and node (its object server on TCP), a user client that runs on no node.

mod common;

use std::time::Duration;

use bytes::Bytes;
use flame_core::auth::TokenKind;
use flame_core::client::{stub, Client, Credentials, StateStamp, Transport};
use flame_core::error::FlameError;
use flame_core::objects::transfer::{self, Dialer};
use flame_core::proto;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
/// How soon a revoked token must be refused by a node (its answers are kept 60 s).
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_the_head_is_refused_by_the_nodes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::start_cluster(
        common::head_config(&dir.path().join("state"), Default::default()),
        common::echo_node(&dir.path().join("node"), 1),
    )
    .await
    .unwrap();
    let head = &cluster.head;
    let token = head
        .security
        .issue_stored(TokenKind::User, "alice", false, 0)
        .unwrap();
    let alice = Credentials::with_token(token.to_string());
    let client = Client::connect(&head.address, &alice, WAIT, "alice")
        .await
        .unwrap();
    let transport = Transport::resolve(&head.address, &alice, WAIT)
        .await
        .unwrap();
    let mut front = stub(
        transport.channel(WAIT).await.unwrap(),
        StateStamp::default().with_bearer(transport.bearer().cloned()),
    );

    // An object of alice's on the node (once the node has registered its object server).
    let id = client.next_object_id().unwrap();
    let data: &[u8] = b"alice's data";
    let size = data.len() as u64;
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        let req = proto::ObjectStored {
            object_id: id.0,
            size,
        };
        match front.place_object(req).await {
            Ok(h) => break h.into_inner(),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("no node to place on yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the node never took objects: {e}"),
        }
    };
    let dialer = Dialer::for_transport(&transport, None, WAIT);
    transfer::put(&dialer, &holder, id, vec![Bytes::from_static(data)])
        .await
        .unwrap();
    let fetch = || async {
        let mut got = Vec::new();
        let holders = std::slice::from_ref(&holder);
        transfer::fetch(&dialer, id, size, holders, &mut got)
            .await
            .map(|_| got)
    };
    // The node asked the head about alice's token, and now remembers the yes.
    assert_eq!(fetch().await.unwrap(), data);

    let admin = common::admin_client(head, "admin").await;
    admin
        .frontend()
        .revoke_token(proto::TokenRef { id: token.id })
        .await
        .unwrap();
    let deadline = Instant::now() + REFUSED_WITHIN;
    loop {
        match fetch().await {
            Err(FlameError::Unauthenticated(m)) => {
                assert!(m.contains("revoked"), "{m}");
                break;
            }
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the node still serves a token revoked {REFUSED_WITHIN:?} ago"
            ),
            Err(e) => panic!("expected UNAUTHENTICATED, got {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop().await;
}
