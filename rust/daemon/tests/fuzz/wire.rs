//! The wire: one connection to the head with typed Frontend and Backend stubs and a raw gRPC
//! client; a codec passing message bodies through as they are, so any bytes can be sent; raw
//! unary calls and raw frames on streaming methods, each answer bounded by `CALL_TIMEOUT`.
//! Every call carries a token (#11): Frontend calls an admin user's, Backend calls the node
//! token of `fuzz-node` ([`set_tokens`]), so the hostile payloads reach the services.

use bytes::{Buf, BufMut, Bytes};
use tokio::task::JoinHandle;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use flame_core::proto::{backend_client::BackendClient, frontend_client::FrontendClient};

use crate::CALL_TIMEOUT;

const MAX_MESSAGE: usize = 1 << 30;

/// A channel whose calls carry a bearer token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to each call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

static TOKENS: std::sync::OnceLock<(Bearer, Bearer)> = std::sync::OnceLock::new();

/// The bearer values (`Bearer <token>`) of the Frontend's and the Backend's calls.
pub fn set_tokens(frontend: &str, backend: &str) {
    let b = |t: &str| Bearer(t.parse().expect("an ASCII token"));
    let _ = TOKENS.set((b(frontend), b(backend)));
}

/// The token for a call of `path`.
fn bearer(path: &str) -> Bearer {
    let (fe, be) = TOKENS.get().expect("set_tokens first").clone();
    if path.starts_with("/flame.Backend/") {
        be
    } else {
        fe
    }
}

fn with_token<T>(path: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", bearer(path).0);
    req
}

/// One connection to the head, with the typed stubs and a raw one.
#[derive(Clone)]
pub struct Wire {
    pub fe: FrontendClient<Authed>,
    pub be: BackendClient<Authed>,
    pub grpc: Grpc<Channel>,
}

impl Wire {
    pub async fn connect(address: &str) -> Wire {
        let channel = Endpoint::from_shared(address.to_string())
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("the head answers");
        Wire {
            fe: FrontendClient::with_interceptor(channel.clone(), bearer("/flame.Frontend/"))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            be: BackendClient::with_interceptor(channel.clone(), bearer("/flame.Backend/"))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            grpc: Grpc::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }
}

/// A codec that passes message bodies through as they are, so any bytes can be sent.
#[derive(Clone, Copy)]
pub struct RawCodec;

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

pub async fn raw_unary(
    mut grpc: Grpc<Channel>,
    path: &'static str,
    body: Bytes,
) -> Result<Bytes, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let r = grpc.unary(
        with_token(path, body),
        PathAndQuery::from_static(path),
        RawCodec,
    );
    Ok(r.await?.into_inner())
}

/// Send `frames` on a streaming method and read the answer to its end, in the background:
/// `Ok` if the stream ended cleanly, its status if it ended with one.
pub fn exchange(
    grpc: &Grpc<Channel>,
    path: &'static str,
    frames: Vec<Bytes>,
) -> JoinHandle<Result<(), Status>> {
    let mut grpc = grpc.clone();
    tokio::spawn(async move {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let req = with_token(path, tokio_stream::iter(frames));
        let call = grpc.streaming(req, PathAndQuery::from_static(path), RawCodec);
        let mut s = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| hang())??
            .into_inner();
        drain(&mut s).await.map(|_| ())
    })
}

pub async fn drain<T>(s: &mut Streaming<T>) -> Result<Vec<T>, Status> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, s.message())
            .await
            .map_err(|_| hang())??
        {
            Some(m) => got.push(m),
            None => return Ok(got),
        }
    }
}

/// For calls whose answer does not matter, only whether there is one.
pub fn none<T>(_: T) -> Option<u64> {
    None
}

pub fn hang() -> Status {
    Status::deadline_exceeded(format!("(test) no answer within {CALL_TIMEOUT:?}"))
}
