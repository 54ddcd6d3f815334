//! Objects moving between nodes (#12) on loopback, TLS and plaintext: a real head, node A's
//! object server on 127.0.0.2 (with node A's credentials, checking tokens at the head),
//! node B's fetcher dialing from 127.0.0.3 (node B's credentials, its own store), and
//! users' clients that run on no node.
//!
//! Seam: the head's directory (`LocateObjects`, `PlaceObject`) is built elsewhere, so these
//! tests hand node B the location (`Fetcher::fetch_located`) and put at node A directly
//! (`transfer::put`) instead of asking the head where.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use flame_core::auth::TokenKind;
use flame_core::client::{stub, Client, Credentials, StateStamp, Transport};
use flame_core::error::FlameError;
use flame_core::ids::ObjectId;
use flame_core::objects::store::{ObjectStore, StoreConfig};
use flame_core::objects::transfer::{self, Dialer};
use flame_core::proto;
use flame_core::tls::NodeKey;
use flame_daemon::node_objects::{self, Fetcher, Gate, HeadLink, ObjectListener};
use flame_daemon::security::tls_mode::{TlsMode, TlsSettings};
use flame_daemon::server::Head;
use flame_daemon::session_manager::ManagerConfig;

const WAIT: Duration = Duration::from_secs(10);

/// A head, node A serving objects, node B's fetcher, and two users.
struct Cluster {
    dir: tempfile::TempDir,
    head: Head,
    stop: CancellationToken,
    a: proto::ObjectHolder,
    a_store: Arc<ObjectStore>,
    b: Fetcher<ObjectStore>,
    b_store: Arc<ObjectStore>,
    alice: Credentials,
    bob: Credentials,
}

async fn cluster(tls: bool) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::head_config(dir.path(), ManagerConfig::default());
    cfg.tls = TlsSettings {
        mode: if tls { TlsMode::On } else { TlsMode::Off },
        names: vec![],
    };
    let head = common::start_head(cfg).await.unwrap();
    let user = |name: &str| {
        let t = head
            .security
            .issue_stored(TokenKind::User, name, false, 0)
            .unwrap();
        Credentials::with_token(t.to_string())
    };
    let (alice, bob) = (user("alice"), user("bob"));
    let stop = CancellationToken::new();

    let a_creds = node_credentials(&head, "node-a");
    let a_link = link(&head, &a_creds, 1, "127.0.0.2").await;
    let listener = ObjectListener::bind(&head.address, Some("127.0.0.2".parse().unwrap()), 0, tls)
        .await
        .unwrap();
    let a = proto::ObjectHolder {
        node_id: 1,
        node_name: "node-a".into(),
        address: listener.address.clone(),
    };
    let a_store = ObjectStore::open(&StoreConfig::new(dir.path().join("node-a"), 1 << 30)).unwrap();
    let gate = Arc::new(Gate::new(watch::channel(Some(a_link)).1));
    let ca = head.security.ca_pem().map(str::to_string);
    let identity = a_creds.identity.clone();
    let tls_of_a = match (&identity, &ca) {
        (Some(i), Some(c)) if tls => Some((i, c.as_str())),
        _ => None,
    };
    node_objects::serve(listener, a_store.clone(), gate, tls_of_a, stop.clone()).unwrap();

    let b_creds = node_credentials(&head, "node-b");
    let b_link = link(&head, &b_creds, 2, "127.0.0.3").await;
    let b_store = ObjectStore::open(&StoreConfig::new(dir.path().join("node-b"), 1 << 30)).unwrap();
    let b = Fetcher::new(b_store.clone(), watch::channel(Some(b_link)).1);
    Cluster {
        dir,
        head,
        stop,
        a,
        a_store,
        b,
        b_store,
        alice,
        bob,
    }
}

/// A node's credentials: a certificate the cluster CA signed on a TLS head, a node token on
/// a plaintext one (what joining gives a node).
fn node_credentials(head: &Head, name: &str) -> Credentials {
    match head.security.tls {
        true => {
            let key = NodeKey::generate();
            let ca = head.security.ca.as_ref().unwrap();
            let signed = ca.sign_node(&key.csr_pem(name), name).unwrap();
            Credentials {
                token: None,
                ca_pem: Some(ca.cert_pem().to_string()),
                identity: Some(key.identity(&signed.cert_pem)),
            }
        }
        false => {
            let token = head.security.issue(TokenKind::Node, name, false, 0);
            Credentials::with_token(token.to_string())
        }
    }
}

/// What a registered node holds of its head: the Frontend and a dialer with its
/// credentials, connections from `from`.
async fn link(head: &Head, creds: &Credentials, node_id: u64, from: &str) -> HeadLink {
    let transport = Transport::resolve(&head.address, creds, WAIT)
        .await
        .unwrap();
    let channel = transport.channel(WAIT).await.unwrap();
    let frontend = stub(
        channel,
        StateStamp::default().with_bearer(transport.bearer().cloned()),
    );
    let dialer = Dialer::for_transport(&transport, creds.identity.clone(), WAIT)
        .from_address(Some(from.parse().unwrap()));
    HeadLink {
        frontend,
        dialer,
        node_id,
    }
}

impl Cluster {
    /// A dialer of a client that runs on no node, with `creds`.
    async fn dialer(&self, creds: &Credentials) -> Dialer {
        let transport = Transport::resolve(&self.head.address, creds, WAIT)
            .await
            .unwrap();
        Dialer::for_transport(&transport, None, WAIT)
    }

    /// A new object id of alice's (a client of hers says hello, so the head knows its
    /// client id is hers).
    async fn alice_object(&self) -> ObjectId {
        let client = Client::connect(&self.head.address, &self.alice, WAIT, "alice")
            .await
            .unwrap();
        client.next_object_id().unwrap()
    }

    fn located(
        &self,
        id: ObjectId,
        size: usize,
        holder: proto::ObjectHolder,
    ) -> proto::ObjectLocation {
        proto::ObjectLocation {
            object_id: id.0,
            size: size as u64,
            holders: vec![holder],
            lost: String::new(),
            rebuilding: false,
        }
    }

    fn b_bytes(&self, id: ObjectId) -> Vec<u8> {
        let mut file = self.b_store.open_object(id).unwrap().file;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut out).unwrap();
        out
    }

    async fn stop(self) {
        self.stop.cancel();
        self.head.stop().await;
        drop(self.dir);
    }
}

fn object(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 1021) as u8).collect()
}

async fn put_on_node_b_and_users(tls: bool) {
    let c = cluster(tls).await;
    let id = c.alice_object().await;
    let data = object(5 * transfer::CHUNK_BYTES + 777);
    let alice = c.dialer(&c.alice).await;
    let parts = vec![
        Bytes::copy_from_slice(&data[..1000]),
        Bytes::copy_from_slice(&data[1000..]),
    ];
    let size = transfer::put(&alice, &c.a, id, parts).await.unwrap();
    assert_eq!(size, data.len() as u64);

    // Three pulls at once: one transfer, byte-identical.
    let at = c.located(id, data.len(), c.a.clone());
    let mut pulls = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (b, at) = (c.b.clone(), at.clone());
        pulls.spawn(async move { b.fetch_located(at).await });
    }
    while let Some(size) = pulls.join_next().await {
        assert_eq!(size.unwrap().unwrap(), data.len() as u64);
    }
    assert_eq!(c.b.stats().totals(), (1, data.len() as u64));
    assert!(c.b_bytes(id) == data, "node B's copy differs");

    // The owner reads it back from node A, off the nodes.
    let mut got = Vec::new();
    transfer::fetch(
        &alice,
        id,
        data.len() as u64,
        std::slice::from_ref(&c.a),
        &mut got,
    )
    .await
    .unwrap();
    assert!(got == data);

    // Another user is refused, naming the object; a forged token and none are not
    // authenticated.
    let bob = c.dialer(&c.bob).await;
    let mut got = Vec::new();
    let err = transfer::fetch(
        &bob,
        id,
        data.len() as u64,
        std::slice::from_ref(&c.a),
        &mut got,
    )
    .await
    .unwrap_err();
    let name = format!("{:#x}", id.0);
    assert!(
        matches!(&err, FlameError::PermissionDenied(m) if m.contains(&name)),
        "{err}"
    );
    let theirs = transfer::put(
        &bob,
        &c.a,
        ObjectId(id.0 + 1),
        vec![Bytes::from_static(b"x")],
    );
    let err = theirs.await.unwrap_err();
    assert!(
        matches!(&err, FlameError::PermissionDenied(m) if m.contains(&format!("{:#x}", id.0 + 1))),
        "{err}"
    );
    let forged =
        flame_core::auth::Token::generate(TokenKind::User, 999, &c.head.security.ca_fingerprint);
    let forged = Credentials {
        token: Some(forged.to_string()),
        ca_pem: c.head.security.ca_pem().map(str::to_string),
        identity: None,
    };
    let forged = c.dialer(&forged).await;
    let err = transfer::fetch(
        &forged,
        id,
        data.len() as u64,
        std::slice::from_ref(&c.a),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FlameError::Unauthenticated(_)), "{err}");
    let nobody = Dialer::new(
        c.head.security.ca_pem().map(str::to_string),
        None,
        None,
        WAIT,
    );
    let err = transfer::fetch(
        &nobody,
        id,
        data.len() as u64,
        std::slice::from_ref(&c.a),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, FlameError::Unauthenticated(m) if m.contains("bearer token")),
        "{err}"
    );

    // Only nodes may ask the head about tokens.
    let transport = Transport::resolve(&c.head.address, &c.alice, WAIT)
        .await
        .unwrap();
    let mut front = stub(
        transport.channel(WAIT).await.unwrap(),
        StateStamp::default().with_bearer(transport.bearer().cloned()),
    );
    let ask = proto::ObjectAccess {
        token: c.bob.token.clone().unwrap(),
        object_ids: vec![id.0],
        write: false,
    };
    let err = front.authorize_objects(ask).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    c.stop().await;
}

#[tokio::test]
async fn an_object_put_on_node_a_is_fetched_by_node_b_and_strangers_are_refused_tls() {
    put_on_node_b_and_users(true).await;
}

#[tokio::test]
async fn an_object_put_on_node_a_is_fetched_by_node_b_and_strangers_are_refused_plaintext() {
    put_on_node_b_and_users(false).await;
}

/// A TCP proxy to `target` on 127.0.0.4 whose first connection is cut once `cut_after`
/// bytes went back to the caller; later connections pass whole. Counts connections.
async fn cutting_proxy(
    target: SocketAddr,
    cut_after: usize,
    stop: CancellationToken,
) -> (SocketAddr, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.4:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        loop {
            let (inbound, _) = tokio::select! {
                _ = stop.cancelled() => return,
                c = listener.accept() => match c { Ok(c) => c, Err(_) => return },
            };
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut in_r, mut in_w) = inbound.into_split();
                let (mut out_r, mut out_w) = outbound.into_split();
                let up = async { tokio::io::copy(&mut in_r, &mut out_w).await };
                let down = async {
                    let mut sent = 0;
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = out_r.read(&mut buf).await?;
                        if n == 0 || (first && sent >= cut_after) {
                            return Ok::<_, std::io::Error>(());
                        }
                        in_w.write_all(&buf[..n]).await?;
                        sent += n;
                    }
                };
                // Whichever ends first (the cut) drops both connections.
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    (at, seen)
}

async fn a_cut_stream_resumes(tls: bool) {
    let c = cluster(tls).await;
    let id = c.alice_object().await;
    let data = object(8 * transfer::CHUNK_BYTES + 3);
    let alice = c.dialer(&c.alice).await;
    transfer::put(&alice, &c.a, id, vec![Bytes::from(data.clone())])
        .await
        .unwrap();

    let target: SocketAddr = c.a.address.rsplit("://").next().unwrap().parse().unwrap();
    let (proxy, connections) =
        cutting_proxy(target, 3 * transfer::CHUNK_BYTES, c.stop.clone()).await;
    let scheme = if tls { "https" } else { "http" };
    // The same node (its certificate names node-a) behind another address.
    let via_proxy = proto::ObjectHolder {
        address: format!("{scheme}://{proxy}"),
        ..c.a.clone()
    };
    let size =
        c.b.fetch_located(c.located(id, data.len(), via_proxy))
            .await
            .unwrap();
    assert_eq!(size, data.len() as u64);
    assert!(c.b_bytes(id) == data, "the resumed copy differs");
    assert!(
        connections.load(Ordering::SeqCst) >= 2,
        "the stream was never cut"
    );
    assert_eq!(c.b.stats().totals(), (1, data.len() as u64));
    c.stop().await;
}

#[tokio::test]
async fn a_stream_cut_mid_object_resumes_tls() {
    a_cut_stream_resumes(true).await;
}

#[tokio::test]
async fn a_stream_cut_mid_object_resumes_plaintext() {
    a_cut_stream_resumes(false).await;
}

/// A node's object server never serves a file it cannot trust (what the head's own object
/// store refused before objects moved to the nodes): one others can write, a symbolic link
/// in an object's place, one another user owns (as root) — each refused naming the file;
/// one of ours, private, is served.
#[tokio::test]
async fn a_node_refuses_to_serve_an_object_file_it_cannot_trust() {
    use std::os::unix::fs::PermissionsExt;
    let c = cluster(false).await;
    let alice = c.dialer(&c.alice).await;
    let data = b"the users' data";
    let put = || async {
        let id = c.alice_object().await;
        let parts = vec![Bytes::from_static(data)];
        transfer::put(&alice, &c.a, id, parts).await.unwrap();
        id
    };
    let file_of = |id: ObjectId| c.a_store.memory_dir().join(format!("{:016x}", id.0));
    let fetch = |id: ObjectId| {
        let alice = alice.clone();
        let a = c.a.clone();
        async move {
            let mut got = Vec::new();
            let len = data.len() as u64;
            transfer::fetch(&alice, id, len, std::slice::from_ref(&a), &mut got)
                .await
                .map(|_| got)
        }
    };

    let writable = put().await;
    std::fs::set_permissions(file_of(writable), std::fs::Permissions::from_mode(0o666)).unwrap();
    let m = fetch(writable).await.unwrap_err().to_string();
    assert!(m.contains(&file_of(writable).display().to_string()), "{m}");
    assert!(
        m.contains("can be written by other users (mode 666)"),
        "{m}"
    );

    let linked = put().await;
    let target = c.dir.path().join("elsewhere"); // another device than /dev/shm
    std::fs::copy(file_of(linked), &target).unwrap();
    std::fs::remove_file(file_of(linked)).unwrap();
    std::os::unix::fs::symlink(&target, file_of(linked)).unwrap();
    let m = fetch(linked).await.unwrap_err().to_string();
    assert!(m.contains("symbolic link"), "{m}");

    if flame_core::private_files::euid() == 0 {
        let foreign = put().await;
        std::os::unix::fs::chown(file_of(foreign), Some(65534), None).unwrap();
        let m = fetch(foreign).await.unwrap_err().to_string();
        assert!(m.contains(&file_of(foreign).display().to_string()), "{m}");
        assert!(m.contains("belongs to uid 65534, not to uid 0"), "{m}");
    }

    let fine = put().await;
    assert_eq!(fetch(fine).await.unwrap(), data);
    c.stop().await;
}
