//! The unauthenticated path (#11): hostile payloads on every Frontend and Backend method,
//! sent with a wrong token, are refused with UNAUTHENTICATED by the auth interceptor; sent
//! without one, with UNAUTHENTICATED by the method — or, for a unary body that does not even
//! decode, with tonic's decoding error ahead of the method (the interceptor lets a call
//! without credentials pass, by design, for `Discover` and `JoinNode`) — and none
//! reaches the session manager: afterwards it has handed out no client id, opened no
//! session, registered no node beyond the cluster's own, and every stream was answered
//! while its frames were still unsent (the refusal comes before the first frame is read).

use bytes::Bytes;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::findings::{err, Findings};
use crate::gen::Gen;
use crate::wire::RawCodec;
use crate::CALL_TIMEOUT;

/// Unary methods that need a user (`Discover` and `JoinNode` need none; the token RPCs are
/// the tokens' part).
const UNARY: &[&str] = &[
    "/flame.Frontend/Hello",
    "/flame.Frontend/RegisterApplication",
    "/flame.Frontend/GetApplication",
    "/flame.Frontend/ListApplications",
    "/flame.Frontend/CreateSession",
    "/flame.Frontend/GetSession",
    "/flame.Frontend/ListSessions",
    "/flame.Frontend/CloseSession",
    "/flame.Frontend/GetClusterInfo",
    "/flame.Frontend/DrainNode",
    "/flame.Frontend/GetTaskLog",
    "/flame.Frontend/GetTask",
    "/flame.Frontend/ListTasks",
    "/flame.Frontend/ListExecutors",
    "/flame.Frontend/CancelTask",
    "/flame.Frontend/DeleteObjects",
];
const STREAMS: &[&str] = &[
    "/flame.Frontend/Stream",
    "/flame.Backend/NodeStream",
    "/flame.Backend/ExecutorStream",
];

fn hostile(g: &mut Gen) -> Bytes {
    let n = g.rng.below(64) as usize;
    Bytes::from(g.rng.bytes(n))
}

/// `None` or a wrong token, as the `authorization` value.
fn credentials(g: &mut Gen) -> Option<String> {
    match g.rng.below(3) {
        0 => None,
        1 => Some("Bearer flame_user_1_nothex".into()),
        _ => {
            let t = flame_core::auth::Token::generate(
                flame_core::auth::TokenKind::User,
                g.rng.below(1000),
                &"00".repeat(32),
            );
            Some(t.bearer())
        }
    }
}

fn request<T>(auth: Option<String>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(a) = auth {
        r.metadata_mut()
            .insert("authorization", a.parse().expect("ASCII"));
    }
    r
}

fn judge(f: &mut Findings, path: &str, token: bool, r: Result<(), Status>) {
    f.count("unauthenticated: hostile calls");
    let input = format!("hostile bytes on {path}, token: {token}");
    let codes: &'static [Code] = if token {
        &[Code::Unauthenticated]
    } else {
        &[Code::Unauthenticated, Code::Internal, Code::InvalidArgument]
    };
    f.judge(path, &input, &r, err(codes));
}

/// `calls` hostile calls spread over every method; each must be UNAUTHENTICATED.
pub async fn fuzz_unauthenticated(g: &mut Gen, f: &mut Findings, channel: Channel, calls: usize) {
    let mut grpc = Grpc::new(channel);
    for i in 0..calls {
        grpc.ready().await.expect("the head answers");
        let auth = credentials(g);
        let token = auth.is_some();
        if i % 2 == 0 {
            let path = UNARY[g.rng.below(UNARY.len() as u64) as usize];
            let call = grpc.unary(
                request(auth, hostile(g)),
                PathAndQuery::from_static(path),
                RawCodec,
            );
            let r = tokio::time::timeout(CALL_TIMEOUT, call).await;
            judge(
                f,
                path,
                token,
                r.unwrap_or_else(|_| Err(Status::deadline_exceeded("hang")))
                    .map(drop),
            );
        } else {
            let path = STREAMS[g.rng.below(STREAMS.len() as u64) as usize];
            // Frames, then silence: an answer while the stream is still open was decided
            // before reading them.
            let frames: Vec<Bytes> = (0..1 + g.rng.below(4)).map(|_| hostile(g)).collect();
            let frames =
                tokio_stream::StreamExt::chain(tokio_stream::iter(frames), tokio_stream::pending());
            let call = grpc.streaming(
                request(auth, frames),
                PathAndQuery::from_static(path),
                RawCodec,
            );
            let r = tokio::time::timeout(CALL_TIMEOUT, call).await;
            judge(
                f,
                path,
                token,
                r.unwrap_or_else(|_| Err(Status::deadline_exceeded("hang")))
                    .map(drop),
            );
        }
    }
}
