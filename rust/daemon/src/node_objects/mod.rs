//! A node's object server and its transfers (#12, README "Objects"): other nodes and
//! clients that run on no node reach the node's object store over TCP here, and the node
//! fetches the objects its processes need from other nodes.
//!
//! - [`listen`] — where the server listens (the node's bind address; 127.0.0.1 under a
//!   loopback head, else every interface) and the address it reports in `NodeRegister`.
//! - [`server`] — `NodeObjects.Fetch` / `Put` over TCP (TLS with the node's certificate on
//!   TLS clusters).
//! - [`gate`] — who may: peer nodes by certificate, others by a bearer token the head
//!   judges (`AuthorizeObjects`), answers kept a minute.
//! - [`fetcher`] — node → node: locate the holders at the head, fetch in chunks, resume a
//!   broken stream, the next holder on failure; one transfer per object however many wait.
//! - [`plane`] — all of it as the node agent runs it (started with the node, told of each
//!   registration).
//!
//! The store itself is the store's (`flame_core::objects::store`); this module sees it
//! through [`ObjectFiles`], the little it needs.

pub mod fetcher;
pub mod gate;
pub mod listen;
mod node_store;
pub mod plane;
pub mod server;

use std::sync::Arc;

use flame_core::error::Result;
use flame_core::ids::ObjectId;
use flame_core::proto::node_objects_server::NodeObjectsServer;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

pub use fetcher::{Fetcher, TransferStats};
pub use gate::Gate;
pub use listen::ObjectListener;
pub use plane::ObjectPlane;

/// What the node's object plane needs of its head connection, set once the node is
/// registered (and again on every registration).
#[derive(Clone)]
pub struct HeadLink {
    /// The head's Frontend with the node's own credentials.
    pub frontend: flame_core::client::Frontend,
    /// Object servers of other nodes, reached with the node's credentials (its certificate
    /// on TLS clusters, its node token otherwise).
    pub dialer: flame_core::objects::transfer::Dialer,
    /// This node's id (its own holdings are never fetched).
    pub node_id: u64,
}

/// The current [`HeadLink`], `None` until the node is registered.
pub type HeadWatch = tokio::sync::watch::Receiver<Option<HeadLink>>;

/// What the object server and the fetcher need of the node's store.
pub trait ObjectFiles: Send + Sync + 'static {
    type Writer: ObjectFileWriter;
    /// Object `id`'s file, its header checked, positioned at the first data byte; and its
    /// data length.
    ///
    /// # Errors
    /// `NotFound` naming the object; `FailedPrecondition` for a damaged file.
    fn read(&self, id: ObjectId) -> Result<(std::fs::File, u64)>;
    /// A writer for a new object `id` of `size` bytes if known: a primary (`copy` false,
    /// a `Put`) or a cached copy fetched from another node. Nothing is visible before
    /// [`ObjectFileWriter::commit`]; a writer dropped uncommitted leaves nothing.
    ///
    /// # Errors
    /// `AlreadyExists` for an id the store holds; `Storage`.
    fn create(
        self: &Arc<Self>,
        id: ObjectId,
        size: Option<u64>,
        copy: bool,
    ) -> Result<Self::Writer>;
}

/// A new object being written (blocking I/O).
pub trait ObjectFileWriter: Send + 'static {
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Make the object visible; its data length.
    fn commit(self) -> Result<u64>;
}

/// Serve `store` on `listener` until `stop`: TLS with `tls` (the node's identity and the
/// cluster CA, client certificates optional) when given.
///
/// # Errors
/// `InvalidArgument` for an identity tonic cannot use.
pub fn serve<S: ObjectFiles>(
    listener: ObjectListener,
    store: Arc<S>,
    gate: Arc<Gate>,
    tls: Option<(&flame_core::tls::Identity, &str)>,
    stop: CancellationToken,
) -> Result<JoinHandle<()>> {
    let mut builder = tonic::transport::Server::builder();
    if let Some((identity, ca_pem)) = tls {
        builder = builder
            .tls_config(flame_core::tls::server_tls(identity, ca_pem))
            .map_err(|e| {
                flame_core::FlameError::InvalidArgument(format!(
                    "the node's TLS identity cannot serve objects: {e}"
                ))
            })?;
    }
    let service = server::ObjectService { store, gate };
    let chunk = flame_core::objects::transfer::CHUNK_BYTES;
    let service = NodeObjectsServer::new(service)
        .max_decoding_message_size(2 * chunk)
        .max_encoding_message_size(2 * chunk);
    let incoming = TcpListenerStream::new(listener.listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok::<_, std::io::Error>(conn)
    });
    Ok(tokio::spawn(async move {
        let result = builder
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "the object server failed");
        }
    }))
}
