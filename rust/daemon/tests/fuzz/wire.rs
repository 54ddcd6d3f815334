//! The wire: one connection to the head with typed Frontend and Backend stubs and a raw gRPC
//! client; a codec passing message bodies through as they are, so any bytes can be sent; raw
//! unary calls and raw frames on streaming methods, each answer bounded by `CALL_TIMEOUT`.

use bytes::{Buf, BufMut, Bytes};
use tokio::task::JoinHandle;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use flame_core::proto::{backend_client::BackendClient, frontend_client::FrontendClient};

use crate::CALL_TIMEOUT;

const MAX_MESSAGE: usize = 1 << 30;

/// One connection to the head, with the typed stubs and a raw one.
#[derive(Clone)]
pub struct Wire {
    pub fe: FrontendClient<Channel>,
    pub be: BackendClient<Channel>,
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
            fe: FrontendClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            be: BackendClient::new(channel.clone())
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
struct RawCodec;

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
        tonic::Request::new(body),
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
        let req = tonic::Request::new(tokio_stream::iter(frames));
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
