//! The node's object store as the node runs it: made when the node starts (budget
//! `object_store_mb`, default 30 % of the node's memory), served on the node's Unix socket,
//! reported to the head (everything held on each registration, copies and removals as they
//! happen, figures with every heartbeat), and removed — dirs and all — when the node stops.

use std::sync::Arc;

use flame_core::client::node_objects::{NODE_OBJECTS_ENV, NODE_SOCKET_ENV};
use flame_core::error::Result;
use flame_core::ids::ObjectId;
use flame_core::objects::remote::RemoteFetch;
use flame_core::objects::store::{ObjectStore, StoreConfig, StoreEvent};
use flame_core::proto::{self, node_message, NodeMessage, ObjectsAdded, ObjectsRemoved};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::object_socket::{self, FetchSlot};
use super::NodeConfig;

/// Share of the node's memory the store may hold when `object_store_mb` is not given.
const DEFAULT_SHARE_PERCENT: u64 = 30;
/// How long calls in flight on the socket may take to finish when the node stops.
const SERVER_STOP: std::time::Duration = std::time::Duration::from_secs(3);
/// Budget when the node's memory is unknown.
const FALLBACK_BUDGET: u64 = 1 << 30;

pub(super) struct LocalObjects {
    pub(super) store: Arc<ObjectStore>,
    /// The node's way to other nodes' objects (none until the node sets one).
    fetch: FetchSlot,
    events: mpsc::UnboundedReceiver<StoreEvent>,
    stop: CancellationToken,
    server: JoinHandle<()>,
    /// The object server's gate (`None`: no object server, or not set yet).
    gate: Option<Arc<crate::node_objects::Gate>>,
}

impl LocalObjects {
    /// Makes the store and serves its socket.
    ///
    /// # Errors
    /// `InvalidArgument` for a budget of 0; `Storage` / `FailedPrecondition` when a dir or
    /// the socket cannot be made.
    pub(super) fn start(config: &NodeConfig) -> Result<Self> {
        let budget = config
            .object_store_bytes
            .unwrap_or_else(|| match config.memory_total() {
                0 => FALLBACK_BUDGET,
                total => total / 100 * DEFAULT_SHARE_PERCENT,
            });
        let mut store_config = StoreConfig::new(&config.work_dir, budget);
        store_config.shm_root = config.object_shm_root.clone();
        let store = ObjectStore::open(&store_config)?;
        let events = store.subscribe();
        let fetch = FetchSlot::default();
        let stop = CancellationToken::new();
        let server = object_socket::serve(store.clone(), fetch.clone(), stop.clone())?;
        tracing::info!(
            memory = %store.memory_dir().display(),
            spill = %store.spill_dir().display(),
            budget_mb = budget >> 20,
            "node object store ready"
        );
        Ok(LocalObjects {
            store,
            fetch,
            events,
            stop,
            server,
            gate: None,
        })
    }

    /// From now on, objects pulled that the store lacks come through `fetch`.
    pub(super) fn set_fetch(&self, fetch: Arc<dyn RemoteFetch>) {
        *self.fetch.write().unwrap_or_else(|e| e.into_inner()) = Some(fetch);
    }

    /// What executors (and clients they start) need to reach the store.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        let shown = |p: &std::path::Path| p.display().to_string();
        vec![
            (NODE_SOCKET_ENV.into(), shown(&self.store.socket_path())),
            (NODE_OBJECTS_ENV.into(), shown(self.store.memory_dir())),
        ]
    }

    /// Everything held, for a (re)registration; `None` when the store is empty.
    pub(super) fn announce_all(&self) -> Option<NodeMessage> {
        let held = self.store.held();
        (!held.is_empty()).then(|| added(held))
    }

    /// The next report for the head (a copy stored, objects removed).
    pub(super) async fn next_report(&mut self) -> NodeMessage {
        match self.events.recv().await {
            Some(StoreEvent::Added(objects)) => added(objects),
            Some(StoreEvent::Removed(ids)) => NodeMessage {
                msg: Some(node_message::Msg::ObjectsRemoved(ObjectsRemoved {
                    object_ids: ids.iter().map(|id| id.0).collect(),
                })),
            },
            // The store keeps its sender while it lives; this never ends first.
            None => std::future::pending().await,
        }
    }

    /// The object server's gate, told of revocations (`NodeCommand.access_revoked`).
    pub(super) fn set_gate(&mut self, gate: Option<Arc<crate::node_objects::Gate>>) {
        self.gate = gate;
    }

    /// `NodeCommand.access_revoked`: cached token answers go; these certificates are
    /// refused.
    pub(super) fn access_revoked(&self, cert_fingerprints: Vec<String>) {
        if let Some(gate) = &self.gate {
            gate.revoked(cert_fingerprints);
        }
    }

    /// `NodeCommand.delete_objects`: the removals are reported like any other.
    pub(super) async fn delete(&self, ids: Vec<u64>) {
        let store = self.store.clone();
        let ids: Vec<ObjectId> = ids.into_iter().map(ObjectId).collect();
        let deleted = tokio::task::spawn_blocking(move || store.delete(&ids)).await;
        if let Err(e) = deleted {
            tracing::warn!("deleting objects failed: {e}");
        }
    }

    pub(super) fn stats(&self) -> proto::ObjectStoreStats {
        self.store.stats().into()
    }

    /// Stops serving the socket and removes the store's dirs.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        // Open connections finish their calls first; a pull stuck on another node must
        // not hold the node's exit.
        let server = self.server;
        let abort = server.abort_handle();
        if tokio::time::timeout(SERVER_STOP, server).await.is_err() {
            abort.abort();
        }
        self.store.close();
    }
}

fn added(objects: Vec<(ObjectId, u64)>) -> NodeMessage {
    let objects = objects
        .into_iter()
        .map(|(id, size)| proto::ObjectStored {
            object_id: id.0,
            size,
        })
        .collect();
    NodeMessage {
        msg: Some(node_message::Msg::ObjectsAdded(ObjectsAdded { objects })),
    }
}
