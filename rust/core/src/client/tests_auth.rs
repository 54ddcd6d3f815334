//! The client's credentials on the wire (#11), against small tonic servers on 127.0.0.1
//! that record what arrives: the bearer header, TLS to a head pinned by the token's
//! fingerprint, the executor link's bearer, and the errors for TLS mismatches.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use super::{Client, Credentials, ObjectClient};
use crate::auth::{Token, TokenKind};
use crate::error::FlameError;
use crate::proto::backend_server::{Backend, BackendServer};
use crate::proto::{ExecutorCommand, ExecutorMessage, NodeCommand, NodeMessage};
use crate::tls::{server_tls, ClusterCa, Identity};

const WAIT: Duration = Duration::from_secs(5);

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A Backend that answers nothing (the recording layer refuses every call first).
struct Nothing;

#[tonic::async_trait]
impl Backend for Nothing {
    type NodeStreamStream = Out<NodeCommand>;
    type ExecutorStreamStream = Out<ExecutorCommand>;

    async fn node_stream(
        &self,
        _: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::NodeStreamStream>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn executor_stream(
        &self,
        _: Request<Streaming<ExecutorMessage>>,
    ) -> Result<Response<Self::ExecutorStreamStream>, Status> {
        Err(Status::unimplemented("test"))
    }
}

/// A service that is never reached (the stream is refused).
struct NullHost;

impl crate::executor::ServiceHost for NullHost {
    fn enter(
        &mut self,
        _: &crate::executor::SessionContext,
    ) -> Result<(), crate::model::TaskFailure> {
        Ok(())
    }

    fn invoke(
        &mut self,
        _: crate::ids::SessionId,
        _: crate::ids::TaskId,
        input: bytes::Bytes,
    ) -> Result<bytes::Bytes, crate::model::TaskFailure> {
        Ok(input)
    }

    fn leave(&mut self) {}
}

/// `authorization` values of every request the server saw.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// A server on 127.0.0.1 (TLS with `tls`) that records each request's `authorization`
/// and refuses it with UNAUTHENTICATED "recorded". Stops with the test's runtime.
async fn recording_server(tls: Option<&Identity>, ca: Option<&ClusterCa>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    let layer = tonic::service::InterceptorLayer::new(move |req: Request<()>| {
        let auth = req
            .metadata()
            .get(crate::auth::AUTHORIZATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        record.lock().unwrap().push(auth);
        Err::<Request<()>, _>(Status::unauthenticated("recorded"))
    });
    let mut builder = Server::builder();
    if let (Some(id), Some(ca)) = (tls, ca) {
        builder = builder.tls_config(server_tls(id, ca.cert_pem())).unwrap();
    }
    let router = builder
        .layer(layer)
        .add_service(BackendServer::new(Nothing));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, seen)
}

fn cluster_ca(dir: &tempfile::TempDir) -> (ClusterCa, Identity) {
    let ca = ClusterCa::load_or_create(dir.path()).unwrap();
    let server = ca.issue_server(&["127.0.0.1".into()]).unwrap();
    (ca, server)
}

fn unauthenticated(r: Result<Client, FlameError>) -> String {
    match r {
        Err(FlameError::Unauthenticated(m)) => m,
        Err(e) => panic!("expected Unauthenticated, got {e:?}"),
        Ok(_) => panic!("expected Unauthenticated, got a client"),
    }
}

#[tokio::test]
async fn every_call_carries_the_bearer_token_and_a_refusal_says_what_to_do() {
    let (addr, seen) = recording_server(None, None).await;
    let token = Token::generate(TokenKind::User, 9, &"ab".repeat(32)).to_string();
    let creds = Credentials::with_token(token.clone());
    let address = format!("http://{addr}");
    let msg = unauthenticated(Client::connect(&address, &creds, WAIT, "t").await);
    assert!(msg.contains("recorded"), "{msg}");
    assert!(msg.contains(&format!("flame login {address}")), "{msg}");
    assert!(
        msg.contains("FLAME_TOKEN") && msg.contains("token="),
        "{msg}"
    );
    // The object client (no hello) carries it too.
    let objects = ObjectClient::connect(&address, &creds, WAIT).await.unwrap();
    let _ = objects.delete(&[]).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(*seen.lock().unwrap(), [Some(bearer.clone()), Some(bearer)]);

    // Without a token, nothing is sent.
    let _ = Client::connect(&address, &Credentials::none(), WAIT, "t").await;
    assert_eq!(seen.lock().unwrap().last(), Some(&None));

    // A malformed token is refused before anything is sent.
    let n = seen.lock().unwrap().len();
    let bad = Credentials::with_token("flame_user_1_nothex");
    let err = Client::connect(&address, &bad, WAIT, "t")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, FlameError::InvalidArgument(_)), "{err:?}");
    assert_eq!(seen.lock().unwrap().len(), n);
}

#[tokio::test]
async fn a_token_pins_the_ca_of_an_https_head_and_the_bearer_travels_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, server) = cluster_ca(&dir);
    let (addr, seen) = recording_server(Some(&server), Some(&ca)).await;
    let token = Token::generate(TokenKind::User, 2, &ca.fingerprint()).to_string();
    let address = format!("https://{addr}");
    let msg = unauthenticated(
        Client::connect(&address, &Credentials::with_token(token.clone()), WAIT, "t").await,
    );
    assert!(msg.contains("recorded"), "{msg}");
    assert_eq!(*seen.lock().unwrap(), [Some(format!("Bearer {token}"))]);

    // A token naming another CA: refused before any request reaches the head.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = cluster_ca(&other);
    let wrong = Token::generate(TokenKind::User, 2, &other_ca.fingerprint()).to_string();
    let msg = unauthenticated(
        Client::connect(&address, &Credentials::with_token(wrong), WAIT, "t").await,
    );
    assert!(msg.contains("is not the one the token names"), "{msg}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn tls_mismatches_are_named_with_their_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, server) = cluster_ca(&dir);
    let (tls_addr, _) = recording_server(Some(&server), Some(&ca)).await;
    let (plain_addr, _) = recording_server(None, None).await;
    let token = Token::generate(TokenKind::User, 2, &ca.fingerprint()).to_string();

    // A certificate from another CA than the one the client trusts.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = cluster_ca(&other);
    let creds = Credentials {
        token: Some(token.clone()),
        ca_pem: Some(other_ca.cert_pem().to_string()),
        identity: None,
    };
    let address = format!("https://{tls_addr}");
    let msg = unauthenticated(Client::connect(&address, &creds, WAIT, "t").await);
    assert!(
        msg.contains("TLS certificate") && msg.contains("cluster CA"),
        "{msg}"
    );
    assert!(msg.contains(&format!("flame login {address}")), "{msg}");

    // Plaintext to a TLS head.
    let creds = Credentials::with_token(token.clone());
    let err = Client::connect(&format!("http://{tls_addr}"), &creds, WAIT, "t")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, FlameError::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains("speaks TLS") && msg.contains(&address),
        "{msg}"
    );

    // TLS to a plaintext head.
    let creds = Credentials {
        ca_pem: Some(ca.cert_pem().to_string()),
        ..Credentials::with_token(token)
    };
    let err = Client::connect(&format!("https://{plain_addr}"), &creds, WAIT, "t")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("does not speak TLS"), "{msg}");
    assert!(msg.contains(&format!("http://{plain_addr}")), "{msg}");

    // https:// with neither a CA nor a token.
    let err = Client::connect(&address, &Credentials::none(), WAIT, "t")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, FlameError::InvalidArgument(_)), "{msg}");
    assert!(
        msg.contains("no cluster CA is known") && msg.contains("flame login"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_executor_link_carries_the_node_token() {
    let (addr, seen) = recording_server(None, None).await;
    let token = Token::generate(TokenKind::Node, 4, &"cd".repeat(32)).to_string();
    let creds = Credentials::with_token(token.clone());
    let address = format!("http://{addr}");
    let mut host = NullHost;
    let run = tokio::task::spawn_blocking(move || {
        crate::executor::run_executor(&address, &creds, crate::ids::ExecutorId(3), &mut host)
    });
    let err = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, FlameError::Unauthenticated(_)), "{err:?}");
    assert_eq!(*seen.lock().unwrap(), [Some(format!("Bearer {token}"))]);
}
