//! The node's TCP object server: `NodeObjects.Fetch` (stream an object from an offset) and
//! `NodeObjects.Put` (store a new primary object) for other nodes and for clients that run
//! on no node. `Seal` and `Pull` are for the node's own processes and answer only on its
//! Unix socket.
//!
//! File I/O runs on blocking threads fed through small channels ([`CHUNKS_IN_FLIGHT`]), so
//! a slow disk never stalls the runtime and an object is never held in memory whole.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use flame_core::ids::ObjectId;
use flame_core::objects::transfer::CHUNK_BYTES;
use flame_core::proto::{self, node_objects_server::NodeObjects};
use flame_core::FlameError;

use super::gate::{credential, Gate};
use super::{ObjectFileWriter, ObjectFiles};

/// Chunks in flight between the network and a disk thread.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The stream `NodeObjects.Fetch` answers with, on TCP and on the node's Unix socket.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::ObjectChunk, Status>> + Send>>;

/// An object id from the wire: a put's id names its owning client in its high 32 bits (a
/// result's, its session), so an id without them is refused before any lookup.
pub(crate) fn object_id(raw: u64) -> Result<ObjectId, Status> {
    let id = ObjectId(raw);
    if id.owner().0 == 0 {
        return Err(Status::invalid_argument(format!(
            "object id {raw:#x} is not valid: its high 32 bits must be the owning client's id"
        )));
    }
    Ok(id)
}

/// The result of a blocking store call, as the caller's status.
pub(crate) fn joined<T>(
    r: Result<Result<T, FlameError>, tokio::task::JoinError>,
) -> Result<T, Status> {
    r.map_err(|e| Status::internal(format!("object I/O thread failed: {e}")))?
        .map_err(Status::from)
}

/// The service: the node's store behind the gate.
pub struct ObjectService<S> {
    pub(super) store: Arc<S>,
    pub(super) gate: Arc<Gate>,
}

#[tonic::async_trait]
impl<S: ObjectFiles> NodeObjects for ObjectService<S> {
    type FetchStream = ChunkStream;

    async fn fetch(
        &self,
        req: Request<proto::FetchRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let who = credential(&req)?;
        let proto::FetchRequest {
            object_id: raw,
            offset,
        } = req.into_inner();
        let id = object_id(raw)?;
        self.gate.check(&who, &[id], false).await?;
        let store = self.store.clone();
        let opened = tokio::task::spawn_blocking(move || store.read(id)).await;
        let (mut file, len) = joined(opened)?;
        if offset > len {
            return Err(Status::out_of_range(format!(
                "offset {offset} is past the end of object {:#x} ({len} bytes)",
                id.0
            )));
        }
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let failed = |e: std::io::Error| {
                let msg = format!("reading object {:#x}: {e}", id.0);
                let _ = tx.blocking_send(Err(Status::internal(msg)));
            };
            if let Err(e) = file.seek(SeekFrom::Current(offset as i64)) {
                return failed(e);
            }
            let mut left = len - offset;
            let mut first = true;
            loop {
                let n = left.min(CHUNK_BYTES as u64) as usize;
                let mut buf = vec![0u8; n];
                if let Err(e) = file.read_exact(&mut buf) {
                    return failed(e);
                }
                left -= n as u64;
                let chunk = proto::ObjectChunk {
                    object_id: if first { id.0 } else { 0 },
                    data: Bytes::from(buf),
                };
                first = false;
                // A closed channel: the caller went away.
                if tx.blocking_send(Ok(chunk)).is_err() || left == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn put(
        &self,
        req: Request<Streaming<proto::ObjectChunk>>,
    ) -> Result<Response<proto::ObjectStored>, Status> {
        let who = credential(&req)?;
        let mut chunks = req.into_inner();
        let Some(first) = chunks.message().await? else {
            return Err(Status::invalid_argument(
                "Put: the stream ended before its first chunk (which names the object)",
            ));
        };
        let id = object_id(first.object_id)?;
        self.gate.check(&who, &[id], true).await?;
        let store = self.store.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = store.create(id, None, false)?;
            while let Some(data) = rx.blocking_recv() {
                w.write(&data)?;
            }
            Ok(w)
        });
        let mut next = Some(first);
        let mut complete = true;
        while let Some(chunk) = next {
            if chunk.object_id != 0 && chunk.object_id != id.0 {
                return Err(Status::invalid_argument(format!(
                    "Put: a chunk names object {:#x} in the upload of {:#x}",
                    chunk.object_id, id.0
                )));
            }
            if tx.send(chunk.data).await.is_err() {
                break; // the writer failed: its error is reported below
            }
            next = match chunks.message().await {
                Ok(n) => n,
                Err(e) => {
                    complete = false;
                    tracing::debug!(object = id.0, "an upload broke: {e}");
                    None
                }
            };
        }
        drop(tx);
        let w = joined(writer.await)?;
        if !complete {
            // Dropped uncommitted: nothing of it stays.
            drop(w);
            return Err(Status::aborted(format!(
                "the upload of object {:#x} broke before its end; nothing was stored",
                id.0
            )));
        }
        let size = joined(tokio::task::spawn_blocking(move || w.commit()).await)?;
        Ok(Response::new(proto::ObjectStored {
            object_id: id.0,
            size,
        }))
    }

    async fn seal(
        &self,
        _req: Request<proto::ObjectStored>,
    ) -> Result<Response<proto::Empty>, Status> {
        Err(Status::permission_denied(
            "Seal is for the node's own processes, on its Unix socket",
        ))
    }

    async fn pull(
        &self,
        _req: Request<proto::PullRequest>,
    ) -> Result<Response<proto::ObjectLocations>, Status> {
        Err(Status::permission_denied(
            "Pull is for the node's own processes, on its Unix socket",
        ))
    }

    async fn release(
        &self,
        _req: Request<proto::PullRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        Err(Status::permission_denied(
            "Release is for the node's own processes, on its Unix socket",
        ))
    }
}
