//! Real TLS on 127.0.0.1: tonic with the config builders, CA pinning, handshake time.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use super::ders;
use crate::error::FlameError;
use crate::proto::backend_client::BackendClient;
use crate::proto::backend_server::{Backend, BackendServer};
use crate::proto::{ExecutorCommand, ExecutorMessage, NodeCommand, NodeMessage};
use crate::tls::{
    client_rustls_config, client_tls, fetch_pinned_ca, peer_node, peer_node_name,
    server_rustls_config, server_rustls_config_mtls, server_tls, ClusterCa, Identity, NodeKey,
    SignedNode,
};

/// A Backend that answers every NodeStream with the node name of the caller's certificate
/// (in the status message), so the test sees what the head would see.
struct WhoAmI;

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Backend for WhoAmI {
    type NodeStreamStream = Out<NodeCommand>;
    type ExecutorStreamStream = Out<ExecutorCommand>;

    async fn node_stream(
        &self,
        req: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::NodeStreamStream>, Status> {
        // Both helpers see the same certificate.
        let name = peer_node_name(&req);
        let cert = peer_node(&req);
        assert_eq!(name, cert.as_ref().map(|c| c.name.clone()));
        Err(Status::failed_precondition(match cert {
            Some(c) => format!("node={} fingerprint={}", c.name, c.fingerprint),
            None => "node=none".into(),
        }))
    }

    async fn executor_stream(
        &self,
        _req: Request<Streaming<ExecutorMessage>>,
    ) -> Result<Response<Self::ExecutorStreamStream>, Status> {
        Err(Status::unimplemented("test"))
    }
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: ClusterCa,
    server: Identity,
    node: Identity,
    signed: SignedNode,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(dir.path()).unwrap();
    let server = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .unwrap();
    let key = NodeKey::generate();
    let signed = ca.sign_node(&key.csr_pem("node-7"), "node-7").unwrap();
    let node = key.identity(&signed.cert_pem);
    Pki {
        _dir: dir,
        ca,
        server,
        node,
        signed,
    }
}

/// A tonic head on 127.0.0.1 with [`server_tls`]; it stops when the test's runtime ends.
async fn tonic_head(pki: &Pki) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .tls_config(server_tls(&pki.server, pki.ca.cert_pem()))
        .unwrap()
        .add_service(BackendServer::new(WhoAmI));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

async fn who_am_i(channel: Channel) -> Result<String, Status> {
    let err = BackendClient::new(channel)
        .node_stream(tokio_stream::empty::<NodeMessage>())
        .await
        .expect_err("WhoAmI always answers with a status");
    match err.code() {
        tonic::Code::FailedPrecondition => Ok(err.message().to_string()),
        _ => Err(err),
    }
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn tonic_mutual_tls_shows_the_head_the_node_name() {
    let pki = pki();
    let addr = tonic_head(&pki).await;

    let tls = client_tls(pki.ca.cert_pem(), "127.0.0.1", Some(&pki.node));
    let channel = endpoint(addr).tls_config(tls).unwrap().connect().await;
    let expected = format!("node=node-7 fingerprint={}", pki.signed.fingerprint);
    assert_eq!(who_am_i(channel.unwrap()).await.unwrap(), expected);

    // Client certificates are optional: a user (bearer token) connects without one.
    let tls = client_tls(pki.ca.cert_pem(), "localhost", None);
    let channel = endpoint(addr).tls_config(tls).unwrap().connect().await;
    assert_eq!(who_am_i(channel.unwrap()).await.unwrap(), "node=none");
}

#[tokio::test]
async fn a_client_trusting_another_ca_or_using_another_name_is_refused() {
    let pki = pki();
    let other = self::pki();
    let addr = tonic_head(&pki).await;

    let tls = client_tls(other.ca.cert_pem(), "127.0.0.1", None);
    let err = endpoint(addr).tls_config(tls).unwrap().connect().await;
    let err = format!("{:?}", err.expect_err("the head's CA is not trusted"));
    // Every Flame CA has the same subject, so rustls finds "its" CA and the signature fails.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );

    let tls = client_tls(pki.ca.cert_pem(), "elsewhere.example", None);
    let err = endpoint(addr).tls_config(tls).unwrap().connect().await;
    let err = format!("{:?}", err.expect_err("the name is not the head's"));
    assert!(err.contains("NotValidForName"), "{err}");
}

#[tokio::test]
async fn a_node_certificate_from_another_ca_is_refused_by_the_head() {
    let pki = pki();
    let other = self::pki();
    let addr = tonic_head(&pki).await;
    // Trusts the right head but presents a certificate another CA signed.
    let tls = client_tls(pki.ca.cert_pem(), "127.0.0.1", Some(&other.node));
    let refused = match endpoint(addr).tls_config(tls).unwrap().connect().await {
        Err(e) => format!("{e:?}"),
        // TLS 1.3: the client finishes before the server checks its certificate.
        Ok(channel) => format!("{:?}", who_am_i(channel).await.expect_err("refused")),
    };
    assert!(!refused.contains("node="), "{refused}");
    // A plaintext client cannot talk to the TLS head either.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5));
    if let Ok(channel) = plain.connect().await {
        who_am_i(channel).await.expect_err("plaintext refused");
    }
}

#[tokio::test]
async fn fetch_pinned_ca_returns_the_ca_for_its_fingerprint_only() {
    let pki = pki();
    let addr = tonic_head(&pki).await;
    let address = format!("https://{addr}");
    let fp = pki.ca.fingerprint();

    let ca_pem = fetch_pinned_ca(&address, &fp.to_uppercase(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ders(&ca_pem), vec![pki.ca.cert_der().to_vec()]);
    assert_eq!(ca_pem, pki.ca.cert_pem());

    let wrong = self::pki().ca.fingerprint();
    let err = fetch_pinned_ca(&address, &wrong, Duration::from_secs(5))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FlameError::Unauthenticated(_)), "{msg}");
    assert!(msg.contains("is not the one the token names"), "{msg}");
    assert!(msg.contains(&wrong) && msg.contains(&fp), "{msg}");
    assert!(
        msg.contains("wrong head, or a machine in the middle"),
        "{msg}"
    );

    let err = fetch_pinned_ca(&format!("http://{addr}"), &fp, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs TLS"), "{err}");
}

/// A plain tokio-rustls server; each connection is handshaken, then held until the peer
/// closes. Stops with the test's runtime.
async fn rustls_server(config: Arc<tokio_rustls::rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 16];
                    let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_bystander_echoing_the_ca_certificate_is_refused() {
    let pki = pki();
    // The impostor has its own CA and leaf, and appends the real (public) CA certificate.
    let impostor = self::pki();
    let mut fake = impostor.server.clone();
    fake.cert_pem = format!(
        "{}{}",
        ders(&fake.cert_pem)
            .first()
            .map(|d| crate::tls::cert_der_to_pem(d))
            .unwrap(),
        pki.ca.cert_pem()
    );
    let addr = rustls_server(server_rustls_config(&fake).unwrap()).await;
    let err = fetch_pinned_ca(
        &format!("https://{addr}"),
        &pki.ca.fingerprint(),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FlameError::Unauthenticated(_)), "{msg}");
    assert!(msg.contains("does not verify against that CA"), "{msg}");

    // The real head's identity through the same server passes (the refusal is the forgery).
    let addr = rustls_server(server_rustls_config(&pki.server).unwrap()).await;
    fetch_pinned_ca(
        &format!("https://{addr}"),
        &pki.ca.fingerprint(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn fetch_pinned_ca_gives_up_at_its_deadline() {
    // Accepts TCP but never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let err = fetch_pinned_ca(
        &format!("https://{addr}"),
        &"0".repeat(64),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FlameError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

/// Connect + mutual-TLS handshake on loopback, as a node does: median of 20 (printed, not
/// asserted; the issue asks for under 50 ms).
#[tokio::test]
async fn tls_handshake_time_on_loopback() {
    let pki = pki();
    let server = server_rustls_config_mtls(&pki.server, pki.ca.cert_pem()).unwrap();
    let addr = rustls_server(server).await;
    let connector =
        TlsConnector::from(client_rustls_config(pki.ca.cert_pem(), Some(&pki.node)).unwrap());
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector.connect(name.clone(), tcp).await.unwrap();
        times.push(start.elapsed());
        drop(tls);
    }
    times.sort();
    let median = times[times.len() / 2];

    let addr = tonic_head(&pki).await;
    let mut channel_times = Vec::new();
    for _ in 0..20 {
        let tls = client_tls(pki.ca.cert_pem(), "127.0.0.1", Some(&pki.node));
        let start = Instant::now();
        let channel = endpoint(addr)
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        channel_times.push(start.elapsed());
        drop(channel);
    }
    channel_times.sort();
    println!(
        "TLS handshake on loopback (ECDSA P-256, mutual): median of 20 = {:.2} ms \
         (min {:.2}, max {:.2}); tonic Channel connect with TLS: median {:.2} ms",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[19].as_secs_f64() * 1e3,
        channel_times[10].as_secs_f64() * 1e3
    );
}
