//! A node's object plane as the node agent runs it: the object server started with the
//! node (so its address goes into `NodeRegister`), the fetcher, and the head link both
//! use, set again at every registration.
//!
//! On a TLS cluster the server needs the node's certificate with its `<name>.node.flame`
//! name (certificates signed since #12); a node without one (joined before, or a node
//! token only) serves no objects and says how to fix it — other nodes then fetch its
//! objects from nowhere, so the warning names the node.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use flame_core::client::{stub, StateStamp, Transport};
use flame_core::error::Result;
use flame_core::objects::transfer::Dialer;
use flame_core::tls::serves_node_name;

use super::{serve, Fetcher, Gate, HeadLink, ObjectFiles, ObjectListener};
use crate::executor_manager::NodeConfig;

/// How long dialing another node's object server may take.
const DIAL: Duration = Duration::from_secs(10);

/// The running object plane of one node.
pub struct ObjectPlane<S> {
    /// What `NodeRegister.object_address` reports (empty: no object server).
    pub address: String,
    link: watch::Sender<Option<HeadLink>>,
    fetcher: Fetcher<S>,
    identity: Option<flame_core::tls::Identity>,
    bind: Option<std::net::IpAddr>,
    stop: CancellationToken,
    /// The object server's authorization (`None`: no object server).
    gate: Option<Arc<Gate>>,
}

impl<S: ObjectFiles> ObjectPlane<S> {
    /// Bind and serve `store` for the node of `config` (port `config.object_port`).
    ///
    /// # Errors
    /// `InvalidArgument` when the port cannot be bound.
    pub async fn start(config: &NodeConfig, store: Arc<S>) -> Result<Self> {
        let head = flame_core::client::normalize_address(&config.head);
        let tls = head.starts_with("https://");
        let creds = &config.credentials;
        let (link, watch) = watch::channel(None);
        let stop = CancellationToken::new();
        let fetcher = Fetcher::new(store.clone(), watch.clone());
        let mut plane = ObjectPlane {
            address: String::new(),
            link,
            fetcher,
            identity: creds.identity.clone(),
            bind: config.bind,
            stop: stop.clone(),
            gate: None,
        };
        let server_tls = match (tls, &creds.identity, &creds.ca_pem) {
            (false, _, _) => None,
            (true, Some(id), Some(ca)) if serves_node_name(&id.cert_pem, &config.name) => {
                Some((id, ca.as_str()))
            }
            (true, _, _) => {
                tracing::warn!(
                    node = %config.name,
                    "this node has no certificate for serving objects (it joined before \
                     #12, or has no certificate); it serves no objects to other nodes — \
                     join it again with a new join token"
                );
                return Ok(plane);
            }
        };
        let listener = ObjectListener::bind(&head, config.bind, config.object_port, tls).await?;
        plane.address = listener.address.clone();
        let gate = Arc::new(Gate::new(watch));
        plane.gate = Some(gate.clone());
        serve(listener, store, gate, server_tls, stop)?;
        tracing::info!(node = %config.name, address = %plane.address, "object server listening");
        Ok(plane)
    }

    /// The node (re)registered as `node_id` through `transport`: token checks and
    /// transfers go to this head from now on.
    pub fn registered(&self, transport: &Transport, node_id: u64) {
        let channel = match transport.endpoint() {
            Ok(e) => e.connect_lazy(),
            Err(e) => {
                tracing::warn!("the object plane cannot reach the head: {e}");
                return;
            }
        };
        let frontend = stub(
            channel,
            StateStamp::default().with_bearer(transport.bearer().cloned()),
        );
        let dialer =
            Dialer::for_transport(transport, self.identity.clone(), DIAL).from_address(self.bind);
        let _ = self.link.send(Some(HeadLink {
            frontend,
            dialer,
            node_id,
        }));
    }

    /// The object server's authorization, for revocations from the head (`None`: this
    /// node serves no objects).
    pub fn gate(&self) -> Option<Arc<Gate>> {
        self.gate.clone()
    }

    /// Fetches objects of other nodes into this node's store.
    pub fn fetcher(&self) -> &Fetcher<S> {
        &self.fetcher
    }
}

impl<S> Drop for ObjectPlane<S> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
