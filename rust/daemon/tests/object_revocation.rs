//! Revocations reach the nodes' object servers (#12). A node remembers the head's answer
//! about a token for a minute (`AuthorizeObjects`, see `node_objects::gate`) and checks a
//! peer node's certificate only against the cluster CA, so the head tells every node what
//! was revoked (`NodeCommand.access_revoked`): a user token a node has just said yes to, and
//! a node certificate it has just served, are refused as soon as an admin revokes them —
//! and by a node that starts later.
//! The own node of a TLS cluster has a node certificate too, so it serves objects over TCP.
//!
//! A real head and node (its object server on TCP), users' clients that run on no node.

mod common;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use flame_core::auth::TokenKind;
use flame_core::client::{stub, Client, Credentials, StateStamp, Transport};
use flame_core::error::FlameError;
use flame_core::ids::ObjectId;
use flame_core::objects::transfer::{self, Dialer};
use flame_core::proto;
use flame_core::tls::NodeKey;
use flame_daemon::local::LocalCluster;
use flame_daemon::security::tls_mode::{TlsMode, TlsSettings};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
/// How soon revoked credentials must be refused by a node (its answers are kept 60 s).
const REFUSED_WITHIN: Duration = Duration::from_secs(5);
const DATA: &[u8] = b"alice's data";

async fn cluster(dir: &std::path::Path, tls: bool) -> LocalCluster {
    let mut cfg = common::head_config(&dir.join("state"), Default::default());
    if tls {
        cfg.tls = TlsSettings {
            mode: TlsMode::On,
            names: vec![],
        };
    }
    common::start_cluster(cfg, common::echo_node(&dir.join("node"), 1))
        .await
        .unwrap()
}

/// A user `alice`'s credentials (with the cluster's CA on TLS).
fn alice(cluster: &LocalCluster) -> (Credentials, u64) {
    let head = &cluster.head;
    let token = head
        .security
        .issue_stored(TokenKind::User, "alice", false, 0)
        .unwrap();
    let creds = Credentials {
        token: Some(token.to_string()),
        ca_pem: head.security.ca_pem().map(str::to_string),
        identity: None,
    };
    (creds, token.id)
}

/// An object of `creds`' stored on the node the head places it on (once the node has
/// registered its object server), and that node.
async fn put(cluster: &LocalCluster, creds: &Credentials) -> (ObjectId, proto::ObjectHolder) {
    let address = &cluster.head.address;
    let client = Client::connect(address, creds, WAIT, "alice")
        .await
        .unwrap();
    let transport = Transport::resolve(address, creds, WAIT).await.unwrap();
    let mut front = stub(
        transport.channel(WAIT).await.unwrap(),
        StateStamp::default().with_bearer(transport.bearer().cloned()),
    );
    let id = client.next_object_id().unwrap();
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        let req = proto::ObjectStored {
            object_id: id.0,
            size: DATA.len() as u64,
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
    transfer::put(&dialer, &holder, id, vec![Bytes::from_static(DATA)])
        .await
        .unwrap();
    (id, holder)
}

async fn fetch(
    dialer: &Dialer,
    id: ObjectId,
    holder: &proto::ObjectHolder,
) -> Result<Vec<u8>, FlameError> {
    let mut got = Vec::new();
    let holders = std::slice::from_ref(holder);
    transfer::fetch(dialer, id, DATA.len() as u64, holders, &mut got)
        .await
        .map(|_| got)
}

/// Waits (at most [`REFUSED_WITHIN`]) until `fetch` is refused as revoked.
async fn refused<F, Fut>(what: &str, fetch: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<u8>, FlameError>>,
{
    let deadline = Instant::now() + REFUSED_WITHIN;
    loop {
        match fetch().await {
            Err(FlameError::Unauthenticated(m)) => {
                assert!(m.contains("revoked"), "{m}");
                return;
            }
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the node still serves {what} revoked {REFUSED_WITHIN:?} ago"
            ),
            Err(e) => panic!("expected UNAUTHENTICATED for {what}, got {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_the_head_is_refused_by_the_nodes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path(), false).await;
    let (creds, token_id) = alice(&cluster);
    let (id, holder) = put(&cluster, &creds).await;
    let transport = Transport::resolve(&cluster.head.address, &creds, WAIT)
        .await
        .unwrap();
    let dialer = Dialer::for_transport(&transport, None, WAIT);
    // The node asked the head about alice's token, and now remembers the yes.
    assert_eq!(fetch(&dialer, id, &holder).await.unwrap(), DATA);

    let admin = common::admin_client(&cluster.head, "admin").await;
    let revoke = proto::TokenRef { id: token_id };
    admin.frontend().revoke_token(revoke).await.unwrap();
    refused("a token", || fetch(&dialer, id, &holder)).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_clusters_own_node_serves_objects_and_refuses_a_revoked_nodes_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path(), true).await;
    let (creds, _) = alice(&cluster);
    // The cluster's own node serves objects over TLS with a node certificate of its own.
    let (id, holder) = put(&cluster, &creds).await;
    assert!(holder.address.starts_with("https://"), "{}", holder.address);

    // Another node ("ghost"), by its certificate: served, until it is revoked.
    let security = &cluster.head.security;
    let ca = security.ca.as_ref().unwrap();
    let key = NodeKey::generate();
    let signed = ca.sign_node(&key.csr_pem("ghost"), "ghost").unwrap();
    security.record_node_cert("ghost", &signed).unwrap();
    let ca_pem = security.ca_pem().map(str::to_string);
    let ghost = Dialer::new(ca_pem, Some(key.identity(&signed.cert_pem)), None, WAIT);
    assert_eq!(fetch(&ghost, id, &holder).await.unwrap(), DATA);

    let admin = common::admin_client(&cluster.head, "admin").await;
    let revoke = proto::NodeRef {
        id: 0,
        name: "ghost".into(),
    };
    admin.frontend().revoke_node(revoke).await.unwrap();
    refused("a node certificate", || fetch(&ghost, id, &holder)).await;
    cluster.stop().await;

    // A node that (re)starts learns the revoked certificates when it registers.
    let cluster = self::cluster(dir.path(), true).await;
    let (id, holder) = put(&cluster, &creds).await;
    let err = fetch(&ghost, id, &holder).await.unwrap_err();
    assert!(
        matches!(&err, FlameError::Unauthenticated(m) if m.contains("revoked")),
        "{err}"
    );
    cluster.stop().await;
}
