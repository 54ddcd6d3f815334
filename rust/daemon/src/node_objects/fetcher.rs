//! Node → node transfers: a process of this node needs an object the store lacks (`Pull`),
//! so the node asks the head where it is (`LocateObjects`, with the node's credentials),
//! fetches it in chunks from the first holder — resuming a broken stream from the bytes it
//! has, then trying the next holder ([`flame_core::objects::transfer::fetch`]) — and keeps
//! it as a cached copy (header + data, length checked against the directory's size).
//!
//! Several transfers run at once (each `fetch` is its own task); pulls of one object while
//! its transfer runs wait for that transfer instead of starting another, so an object
//! crosses the network once per node however many tasks ask. A transfer runs on its own
//! task: a puller that gives up does not cut it short for the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use flame_core::error::{FlameError, Result};
use flame_core::ids::ObjectId;
use flame_core::objects::transfer::{self, Sink};
use flame_core::proto;

use super::{HeadWatch, ObjectFileWriter, ObjectFiles};

/// Chunks between the network and the disk thread.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Transfers this node made (for the heartbeat's `ObjectStoreStats`).
#[derive(Debug, Default)]
pub struct TransferStats {
    transfers: AtomicU64,
    bytes: AtomicU64,
}

impl TransferStats {
    /// Objects fetched from other nodes, and their bytes (counters).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.transfers.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The outcome of one transfer, shared by everyone waiting for it (a `Status` because it
/// clones; it turns back into the `FlameError` it came from).
type Outcome = Option<std::result::Result<u64, Status>>;

/// Fetches objects from other nodes into the store (cheap to clone).
pub struct Fetcher<S> {
    inner: Arc<Inner<S>>,
}

impl<S> std::fmt::Debug for Fetcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("stats", &self.inner.stats)
            .finish_non_exhaustive()
    }
}

impl<S> Clone for Fetcher<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    store: Arc<S>,
    head: HeadWatch,
    running: Mutex<HashMap<ObjectId, watch::Receiver<Outcome>>>,
    stats: Arc<TransferStats>,
}

impl<S: ObjectFiles> Fetcher<S> {
    pub fn new(store: Arc<S>, head: HeadWatch) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                head,
                running: Mutex::default(),
                stats: Arc::default(),
            }),
        }
    }

    /// The transfer counters.
    pub fn stats(&self) -> Arc<TransferStats> {
        self.inner.stats.clone()
    }

    /// Fetch `id` into the store as a cached copy (or wait for the transfer of it that is
    /// running); its size.
    ///
    /// # Errors
    /// `NotFound` naming the object and why when no node holds it (lost with its node,
    /// deleted, never stored); `ConnectionLost` when it is being rebuilt or no holder could
    /// send it; what the store reports.
    pub async fn fetch(&self, id: ObjectId) -> Result<u64> {
        self.run(id, None).await
    }

    /// [`Fetcher::fetch`] from holders the caller already knows (`location`), without
    /// asking the head.
    ///
    /// # Errors
    /// As [`Fetcher::fetch`].
    pub async fn fetch_located(&self, location: proto::ObjectLocation) -> Result<u64> {
        self.run(ObjectId(location.object_id), Some(location)).await
    }

    async fn run(&self, id: ObjectId, location: Option<proto::ObjectLocation>) -> Result<u64> {
        let mut outcome = {
            let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get(&id) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    running.insert(id, rx.clone());
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        let result = inner.transfer(id, location).await.map_err(Status::from);
                        inner
                            .running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        let done = outcome.wait_for(Option::is_some).await.map_err(|_| {
            FlameError::Internal(format!("the transfer of object {:#x} vanished", id.0))
        })?;
        match done.clone() {
            Some(Ok(size)) => Ok(size),
            Some(Err(status)) => Err(status.into()),
            None => Err(FlameError::Internal(
                "a transfer ended without an outcome".into(),
            )),
        }
    }
}

impl<S: ObjectFiles> Inner<S> {
    async fn transfer(&self, id: ObjectId, known: Option<proto::ObjectLocation>) -> Result<u64> {
        let link = self.head.borrow().clone().ok_or_else(|| {
            FlameError::ConnectionLost(format!(
                "object {:#x}: this node is not connected to its head, so it cannot locate it",
                id.0
            ))
        })?;
        let location = match known {
            Some(l) => l,
            None => flame_core::client::locate(&link.frontend, id).await?,
        };
        let holders: Vec<_> = location
            .holders
            .into_iter()
            .filter(|h| h.node_id != link.node_id && !h.address.is_empty())
            .collect();
        if holders.is_empty() {
            return Err(if location.rebuilding {
                FlameError::ConnectionLost(format!(
                    "object {:#x} is being rebuilt (its node was lost); ask again later",
                    id.0
                ))
            } else if !location.lost.is_empty() {
                FlameError::NotFound(location.lost)
            } else {
                FlameError::NotFound(format!("object {:#x}: no other node holds it", id.0))
            });
        }
        let size = location.size;
        let store = self.store.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = store.create(id, Some(size), true)?;
            while let Some(data) = rx.blocking_recv() {
                w.write(&data)?;
            }
            Ok::<_, FlameError>(w)
        });
        let mut sink = StoreSink { tx, written: 0 };
        let fetched = transfer::fetch(&link.dialer, id, size, &holders, &mut sink).await;
        drop(sink);
        // A writer that failed says why better than the transfer it cut short.
        let w = writer
            .await
            .map_err(|e| FlameError::Internal(format!("object writer thread: {e}")))??;
        let holder = fetched?;
        let committed = tokio::task::spawn_blocking(move || w.commit())
            .await
            .map_err(|e| FlameError::Internal(format!("object writer thread: {e}")))??;
        self.stats.transfers.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(committed, Ordering::Relaxed);
        tracing::debug!(object = id.0, bytes = committed, from = %holder.node_name, "object fetched");
        Ok(committed)
    }
}

/// Bytes on their way to the store's writer thread.
struct StoreSink {
    tx: mpsc::Sender<Bytes>,
    written: u64,
}

impl Sink for StoreSink {
    fn written(&self) -> u64 {
        self.written
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        self.tx
            .send(data)
            .await
            .map_err(|_| FlameError::Storage("the object writer stopped".into()))?;
        self.written += n;
        Ok(())
    }
}
