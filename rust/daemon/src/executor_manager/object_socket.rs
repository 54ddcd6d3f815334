//! The node's `NodeObjects` service on its Unix socket (`<memory dir>/node.sock`), for the
//! processes of its own machine: `Seal` adopts an object file a process wrote into the
//! memory dir; `Pull` makes objects local — at once for those held (a spilled one is
//! restored first), through the [`RemoteFetch`] for the others (NOT_FOUND naming the
//! object when the node has none). `Fetch` and `Put` are the TCP object server's.
//!
//! The socket's dir is 0700: only the node's OS user reaches it, so calls carry no
//! credentials. Store calls touch files (a seal may spill), so they run on the blocking
//! pool, not on the runtime's threads.

use std::sync::{Arc, RwLock};

use flame_core::error::FlameError;
use flame_core::ids::ObjectId;
use flame_core::objects::remote::RemoteFetch;
use flame_core::objects::store::ObjectStore;
use flame_core::proto::node_objects_server::{NodeObjects, NodeObjectsServer};
use flame_core::proto::{
    Empty, FetchRequest, ObjectChunk, ObjectLocation, ObjectLocations, ObjectStored, PullRequest,
};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::node_objects::server::ChunkStream;

/// Where the node's [`RemoteFetch`] is plugged in (set once the node can reach others).
pub(super) type FetchSlot = Arc<RwLock<Option<Arc<dyn RemoteFetch>>>>;

struct ObjectSocket {
    store: Arc<ObjectStore>,
    fetch: FetchSlot,
}

/// Serves the socket until `stop` is cancelled.
///
/// # Errors
/// `Storage` naming the socket when it cannot be bound.
pub(super) fn serve(
    store: Arc<ObjectStore>,
    fetch: FetchSlot,
    stop: CancellationToken,
) -> flame_core::Result<JoinHandle<()>> {
    let path = store.socket_path();
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| FlameError::Storage(format!("cannot listen on {}: {e}", path.display())))?;
    let service = NodeObjectsServer::new(ObjectSocket { store, fetch });
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop.cancelled_owned());
    Ok(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(socket = %path.display(), "node object socket failed: {e}");
        }
    }))
}

fn object_id(raw: u64) -> Result<ObjectId, Status> {
    if raw == 0 {
        return Err(Status::invalid_argument("object_id is required (got 0)"));
    }
    Ok(ObjectId(raw))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> flame_core::Result<T> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("object store call failed: {e}"))),
    }
}

/// Opens a held object (pinned for its reader when asked); its size.
fn open(store: &ObjectStore, id: ObjectId, pin: bool) -> flame_core::Result<u64> {
    let opened = if pin {
        store.open_pinned(id)
    } else {
        store.open_object(id)
    };
    opened.map(|f| f.size)
}

/// Fetches `id` from another node; with `pin`, pins the copy for its reader. A copy
/// evicted between its commit and the pin (the store over budget and busy) is fetched
/// again: once pinned it stays until the reader releases it.
async fn fetch_pinned(
    fetch: &dyn RemoteFetch,
    store: Arc<ObjectStore>,
    id: ObjectId,
    pin: bool,
) -> flame_core::Result<u64> {
    let mut attempts = 0;
    loop {
        let size = fetch.fetch(store.clone(), id).await?;
        if !pin {
            return Ok(size);
        }
        let s = store.clone();
        let opened = tokio::task::spawn_blocking(move || s.open_pinned(id))
            .await
            .map_err(|e| FlameError::Internal(format!("object store call failed: {e}")))?;
        match opened {
            Ok(f) => return Ok(f.size),
            Err(FlameError::NotFound(_)) if attempts < PIN_ATTEMPTS => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Fetches of one pull whose copy is evicted before it could be pinned, before giving up.
const PIN_ATTEMPTS: u32 = 3;

#[tonic::async_trait]
impl NodeObjects for ObjectSocket {
    type FetchStream = ChunkStream;

    async fn fetch(&self, _: Request<FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        Err(Status::unimplemented(
            "Fetch is served by the node's TCP object server; local processes map the \
             object's file (Pull first)",
        ))
    }

    async fn put(
        &self,
        _: Request<Streaming<ObjectChunk>>,
    ) -> Result<Response<ObjectStored>, Status> {
        Err(Status::unimplemented(
            "Put is served by the node's TCP object server; local processes write the file \
             into the memory dir and Seal it",
        ))
    }

    async fn seal(&self, req: Request<ObjectStored>) -> Result<Response<Empty>, Status> {
        let sealed = req.into_inner();
        let id = object_id(sealed.object_id)?;
        let store = self.store.clone();
        blocking(move || store.seal(id, sealed.size)).await?;
        Ok(Response::new(Empty {}))
    }

    async fn release(&self, req: Request<PullRequest>) -> Result<Response<Empty>, Status> {
        let ids = req
            .into_inner()
            .object_ids
            .into_iter()
            .map(object_id)
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.store.clone();
        blocking(move || {
            store.release(&ids);
            Ok(())
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<ObjectLocations>, Status> {
        let req = req.into_inner();
        let pin = req.pin;
        let ids = req
            .object_ids
            .into_iter()
            .map(object_id)
            .collect::<Result<Vec<_>, _>>()?;
        let fetch = self.fetch.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut fetches = tokio::task::JoinSet::new();
        let mut sizes = std::collections::HashMap::new();
        for id in ids.iter().copied() {
            if sizes.contains_key(&id) {
                continue;
            }
            if self.store.contains(id) {
                let store = self.store.clone();
                // Opening restores a spilled object and checks its header.
                let size = blocking(move || open(&store, id, pin)).await;
                match size {
                    Ok(size) => {
                        sizes.insert(id, size);
                        continue;
                    }
                    // Gone meanwhile (evicted, or damaged and removed): fetch it again.
                    Err(s) if fetch.is_some() && s.code() != tonic::Code::Internal => {}
                    Err(s) => return Err(s),
                }
            }
            let Some(fetch) = &fetch else {
                return Err(Status::not_found(format!(
                    "object {:#x} is not on this node, and this node cannot fetch objects \
                     from others",
                    id.0
                )));
            };
            let (fetch, store) = (fetch.clone(), self.store.clone());
            sizes.insert(id, 0);
            fetches.spawn(async move { (id, fetch_pinned(&*fetch, store, id, pin).await) });
        }
        while let Some(done) = fetches.join_next().await {
            let (id, result) = done.map_err(|e| Status::internal(format!("fetch failed: {e}")))?;
            sizes.insert(id, result.map_err(Status::from)?);
        }
        let objects = ids
            .iter()
            .map(|id| ObjectLocation {
                object_id: id.0,
                size: sizes.get(id).copied().unwrap_or(0),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ObjectLocations { objects }))
    }
}
