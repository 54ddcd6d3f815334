//! Moving an object's bytes between a node's object server (`NodeObjects` over TCP) and
//! whoever needs them — another node filling its store, or a client that runs on no node.
//!
//! - [`Dialer`]: how to reach a holder. TLS clusters: the cluster CA and the node's
//!   certificate name `<node>.node.flame` ([`crate::tls::node_server_name`]), presenting a
//!   node certificate if the caller has one (a peer); the caller's bearer token otherwise.
//!   Channels are kept per holder and reused (HTTP/2 multiplexes concurrent transfers).
//! - [`fetch`]: read a `Fetch` stream into a [`Sink`] in chunks. A stream that breaks is
//!   resumed from the bytes the sink already holds (`offset`), a few times, then the next
//!   holder is tried; the byte count is checked against the size the directory gave, so a
//!   short or long stream is never taken for the object.
//! - [`put`]: send a new object to a node in 1 MiB chunks (slicing `Bytes` is zero-copy).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::client::{StateStamp, Transport};
use crate::error::{error_chain, FlameError, Result};
use crate::ids::ObjectId;
use crate::proto::{self, node_objects_client::NodeObjectsClient};
use crate::tls::{client_tls, node_server_name, Identity};

/// Bytes per chunk of a transfer.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Attempts in a row on one holder that bring no new byte before the next holder is tried.
const TRIES_WITHOUT_PROGRESS: u32 = 2;
/// Resumes on one holder in all (a holder that keeps dropping the stream is left).
const RESUMES_PER_HOLDER: u32 = 16;
/// Flow-control windows: large enough that one stream fills a fast link.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;

/// A `NodeObjects` stub carrying the caller's bearer token.
pub type NodeObjects = NodeObjectsClient<InterceptedService<Channel, StateStamp>>;

/// How to reach object servers with one caller's credentials (cheap to clone).
#[derive(Clone)]
pub struct Dialer {
    ca_pem: Option<String>,
    identity: Option<Identity>,
    bearer: Option<MetadataValue<Ascii>>,
    timeout: Duration,
    /// Local address connections come from (a node's `--bind`).
    local: Option<std::net::IpAddr>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("tls", &self.ca_pem.is_some())
            .field("certificate", &self.identity.is_some())
            .field("bearer", &self.bearer.is_some())
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// Object servers trusted through `ca_pem` (TLS clusters), with a node certificate
    /// (`identity`, a peer node) and/or a bearer token (`Bearer <token>`).
    pub fn new(
        ca_pem: Option<String>,
        identity: Option<Identity>,
        bearer: Option<MetadataValue<Ascii>>,
        timeout: Duration,
    ) -> Self {
        Self {
            ca_pem,
            identity,
            bearer,
            timeout,
            local: None,
            channels: Arc::default(),
        }
    }

    /// Connections from `local` (a node's bind address) rather than the OS's choice.
    pub fn from_address(mut self, local: Option<std::net::IpAddr>) -> Self {
        self.local = local;
        self
    }

    /// The credentials a head's [`Transport`] uses (its CA, its bearer), plus `identity`.
    pub fn for_transport(
        transport: &Transport,
        identity: Option<Identity>,
        timeout: Duration,
    ) -> Self {
        Self::new(
            transport.ca_pem().map(str::to_string),
            identity,
            transport.bearer().cloned(),
            timeout,
        )
    }

    /// A stub for `holder`'s object server (a kept channel if there is one).
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed address, or an `https://` server and no CA;
    /// `Unreachable` naming the node when it does not answer in time.
    pub async fn connect(&self, holder: &proto::ObjectHolder) -> Result<NodeObjects> {
        let key = key(holder);
        let kept = self.lock().get(&key).cloned();
        let channel = match kept {
            Some(c) => c,
            None => {
                let c = self.open(holder).await?;
                self.lock().insert(key, c.clone());
                c
            }
        };
        let stamp = StateStamp::default().with_bearer(self.bearer.clone());
        Ok(NodeObjectsClient::with_interceptor(channel, stamp)
            .max_decoding_message_size(2 * CHUNK_BYTES)
            .max_encoding_message_size(2 * CHUNK_BYTES))
    }

    /// Drop the kept channel of `holder` (after it failed: the next call dials anew).
    pub fn forget(&self, holder: &proto::ObjectHolder) {
        self.lock().remove(&key(holder));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn open(&self, holder: &proto::ObjectHolder) -> Result<Channel> {
        let address = &holder.address;
        let bad = |e: String| {
            FlameError::InvalidArgument(format!(
                "bad object server address '{address}' of node {}: {e}",
                holder.node_name
            ))
        };
        let mut endpoint =
            Endpoint::from_shared(address.clone()).map_err(|e| bad(e.to_string()))?;
        if address.starts_with("https://") {
            let ca = self.ca_pem.as_deref().ok_or_else(|| {
                FlameError::InvalidArgument(format!(
                    "node {} serves objects over TLS ({address}) and no cluster CA is known",
                    holder.node_name
                ))
            })?;
            let domain = node_server_name(&holder.node_name);
            let tls = client_tls(ca, &domain, self.identity.as_ref());
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(error_chain(&e)))?;
        } else if !address.starts_with("http://") {
            return Err(bad("the scheme must be http:// or https://".into()));
        }
        let endpoint = endpoint
            .connect_timeout(self.timeout)
            .local_address(self.local)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        let unreachable = |reason: String| FlameError::Unreachable {
            address: format!("{address} (node {})", holder.node_name),
            reason,
        };
        match tokio::time::timeout(self.timeout, endpoint.connect()).await {
            Err(_) => Err(unreachable(format!("no answer within {:?}", self.timeout))),
            Ok(Err(e)) => Err(unreachable(error_chain(&e))),
            Ok(Ok(c)) => Ok(c),
        }
    }
}

fn key(holder: &proto::ObjectHolder) -> String {
    format!("{} {}", holder.node_name, holder.address)
}

/// Where fetched bytes go: a store writer, or memory. `written` is where a resumed
/// stream starts.
pub trait Sink: Send {
    /// Bytes taken so far.
    fn written(&self) -> u64;
    /// Take the next bytes.
    fn write(&mut self, data: Bytes) -> impl Future<Output = Result<()>> + Send;
}

impl Sink for Vec<u8> {
    fn written(&self) -> u64 {
        self.len() as u64
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.extend_from_slice(&data);
        Ok(())
    }
}

/// Why one attempt ended: the remote side (try again, or another holder) or the sink
/// (stop: another holder would not help).
enum Failed {
    Remote(FlameError),
    Local(FlameError),
}

/// Fetch object `id` of `size` bytes into `sink` from `holders`, in order: each stream that
/// breaks is resumed from the sink's byte count; a holder that refuses, lacks the object or
/// keeps failing is left for the next. Returns the holder that finished the transfer.
///
/// # Errors
/// What the sink reports; `Unauthenticated` / `PermissionDenied` when a holder refused the
/// caller's credentials and none sent the object; otherwise `ConnectionLost` naming the
/// object and what each holder did.
pub async fn fetch<'h>(
    dialer: &Dialer,
    id: ObjectId,
    size: u64,
    holders: &'h [proto::ObjectHolder],
    sink: &mut impl Sink,
) -> Result<&'h proto::ObjectHolder> {
    let mut failures = Vec::new();
    let mut refusal = None;
    for holder in holders {
        let (mut idle, mut resumes) = (0, 0);
        loop {
            let before = sink.written();
            let err = match fetch_once(dialer, holder, id, size, sink).await {
                Ok(()) => return Ok(holder),
                Err(Failed::Local(e)) => return Err(e),
                Err(Failed::Remote(e)) => e,
            };
            if sink.written() > before {
                idle = 0;
            } else {
                idle += 1;
            }
            resumes += 1;
            dialer.forget(holder);
            if resumable(&err) && idle < TRIES_WITHOUT_PROGRESS && resumes < RESUMES_PER_HOLDER {
                tracing::debug!(object = id.0, node = %holder.node_name, at = sink.written(), "object stream broke; resuming: {err}");
                continue;
            }
            failures.push(format!(
                "node {} ({}): {err}",
                holder.node_name, holder.address
            ));
            if matches!(
                err,
                FlameError::Unauthenticated(_) | FlameError::PermissionDenied(_)
            ) {
                refusal.get_or_insert(err);
            }
            break;
        }
    }
    if let Some(refused) = refusal {
        return Err(refused);
    }
    Err(FlameError::ConnectionLost(format!(
        "object {:#x} could not be fetched ({} of {size} bytes received): {}",
        id.0,
        sink.written(),
        if failures.is_empty() {
            "no node holds it".to_string()
        } else {
            failures.join("; ")
        }
    )))
}

/// Whether a failed attempt is worth resuming on the same holder.
fn resumable(e: &FlameError) -> bool {
    matches!(
        e,
        FlameError::ConnectionLost(_)
            | FlameError::Unreachable { .. }
            | FlameError::Internal(_)
            | FlameError::Timeout(_)
    )
}

/// One `Fetch` from the sink's byte count to the end.
async fn fetch_once(
    dialer: &Dialer,
    holder: &proto::ObjectHolder,
    id: ObjectId,
    size: u64,
    sink: &mut impl Sink,
) -> std::result::Result<(), Failed> {
    let offset = sink.written();
    if offset == size {
        return Ok(());
    }
    let remote = Failed::Remote;
    let mut client = dialer.connect(holder).await.map_err(remote)?;
    let req = proto::FetchRequest {
        object_id: id.0,
        offset,
    };
    let mut stream = client
        .fetch(req)
        .await
        .map_err(|s| remote(s.into()))?
        .into_inner();
    while let Some(chunk) = stream.message().await.map_err(|s| remote(s.into()))? {
        if chunk.object_id != 0 && chunk.object_id != id.0 {
            return Err(remote(FlameError::Internal(format!(
                "node {} sent object {:#x} when asked for {:#x}",
                holder.node_name, chunk.object_id, id.0
            ))));
        }
        let end = sink.written() + chunk.data.len() as u64;
        if end > size {
            return Err(remote(FlameError::FailedPrecondition(format!(
                "node {} sent {end} bytes or more of object {:#x}, which has {size}",
                holder.node_name, id.0
            ))));
        }
        sink.write(chunk.data).await.map_err(Failed::Local)?;
    }
    if sink.written() != size {
        return Err(remote(FlameError::ConnectionLost(format!(
            "the stream of object {:#x} from node {} ended at byte {} of {size}",
            id.0,
            holder.node_name,
            sink.written()
        ))));
    }
    Ok(())
}

/// Store a new object made of `parts` (one after the other) at `holder`; its size.
///
/// # Errors
/// What the node answered (`PermissionDenied` naming the object, `AlreadyExists`, a full
/// store), `Unreachable`, or `Internal` when the node stored another size than was sent.
pub async fn put(
    dialer: &Dialer,
    holder: &proto::ObjectHolder,
    id: ObjectId,
    parts: Vec<Bytes>,
) -> Result<u64> {
    let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let mut client = dialer.connect(holder).await?;
    let stored = client
        .put(tokio_stream::iter(chunks(id, parts)))
        .await
        .inspect_err(|_| dialer.forget(holder))?
        .into_inner();
    if stored.size != size || stored.object_id != id.0 {
        return Err(FlameError::Internal(format!(
            "node {} stored {} bytes as object {:#x}; {size} were sent as {:#x}",
            holder.node_name, stored.size, stored.object_id, id.0
        )));
    }
    Ok(size)
}

/// `parts` cut into chunks of at most [`CHUNK_BYTES`]; the first names the object (an
/// empty object is one empty chunk).
pub fn chunks(id: ObjectId, parts: Vec<Bytes>) -> impl Iterator<Item = proto::ObjectChunk> {
    let mut pieces = Vec::new();
    for part in parts {
        let mut at = 0;
        while at < part.len() {
            let end = (at + CHUNK_BYTES).min(part.len());
            pieces.push(part.slice(at..end));
            at = end;
        }
    }
    if pieces.is_empty() {
        pieces.push(Bytes::new());
    }
    pieces
        .into_iter()
        .enumerate()
        .map(move |(i, data)| proto::ObjectChunk {
            object_id: if i == 0 { id.0 } else { 0 },
            data,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_cut_into_chunks_and_the_first_names_the_object() {
        let id = ObjectId(0x5_0000_0001);
        let big = Bytes::from(vec![7u8; CHUNK_BYTES * 2 + 10]);
        let small = Bytes::from_static(b"abc");
        let out: Vec<_> = chunks(id, vec![big, small]).collect();
        let sizes: Vec<usize> = out.iter().map(|c| c.data.len()).collect();
        assert_eq!(sizes, [CHUNK_BYTES, CHUNK_BYTES, 10, 3]);
        assert_eq!(out[0].object_id, id.0);
        assert!(out[1..].iter().all(|c| c.object_id == 0));
        let empty: Vec<_> = chunks(id, vec![]).collect();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].data.is_empty() && empty[0].object_id == id.0);
    }
}
