//! The Frontend's object calls: upload, download and delete object files in chunks, for
//! clients and executors that are not on the head's machine (those that are use the files
//! directly). File I/O runs on blocking threads, fed through small channels, so a slow disk
//! never stalls the runtime and a large object is never held in memory whole.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use flame_core::ids::ObjectId;
use flame_core::proto;
use flame_core::storage::ObjectStore;
use flame_core::FlameError;

/// Bytes per chunk sent by `GetObject`.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between the network and the disk thread.
const CHUNKS_IN_FLIGHT: usize = 4;

pub type ObjectStream = Pin<Box<dyn Stream<Item = Result<proto::ObjectChunk, Status>> + Send>>;

pub(crate) fn object_id(raw: u64) -> Result<ObjectId, Status> {
    let id = ObjectId(raw);
    if id.owner().0 == 0 {
        return Err(Status::invalid_argument(format!(
            "object id {raw:#x} is not valid: its high 32 bits must be the owning client's id"
        )));
    }
    Ok(id)
}

pub(crate) fn joined<T>(
    r: Result<Result<T, FlameError>, tokio::task::JoinError>,
) -> Result<T, Status> {
    r.map_err(|e| Status::internal(format!("object I/O thread failed: {e}")))?
        .map_err(Status::from)
}

/// Store the chunks of one object; the first chunk names it, and `allowed` decides whether
/// the caller may write that id (#11: only under its own clients' ids).
pub async fn put(
    store: Arc<ObjectStore>,
    mut chunks: Streaming<proto::ObjectChunk>,
    allowed: impl FnOnce(u64) -> Result<(), Status>,
) -> Result<proto::ObjectStored, Status> {
    let Some(first) = chunks.message().await? else {
        return Err(Status::invalid_argument(
            "PutObject: the stream ended before its first chunk (which names the object)",
        ));
    };
    let id = object_id(first.object_id)?;
    allowed(id.0)?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = store.writer(id)?;
        while let Some(data) = rx.blocking_recv() {
            w.write(&data)?;
        }
        w.commit()
    });
    let mut next = Some(first);
    while let Some(chunk) = next {
        if chunk.object_id != 0 && chunk.object_id != id.0 {
            return Err(Status::invalid_argument(format!(
                "PutObject: a chunk names object {:#x} in the upload of {:#x}",
                chunk.object_id, id.0
            )));
        }
        if tx.send(chunk.data).await.is_err() {
            break; // the writer failed: its error is reported below
        }
        next = chunks.message().await?;
    }
    drop(tx);
    let size = joined(writer.await)?;
    Ok(proto::ObjectStored {
        object_id: id.0,
        size,
    })
}

/// Stream an object's bytes back in chunks.
pub async fn get(store: Arc<ObjectStore>, raw_id: u64) -> Result<ObjectStream, Status> {
    let id = object_id(raw_id)?;
    let opener = store.clone();
    let mut file = joined(tokio::task::spawn_blocking(move || opener.open_object(id)).await)?;
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let msg = format!("reading object {:#x}: {e}", id.0);
                    let _ = tx.blocking_send(Err(Status::internal(msg)));
                    return;
                }
            };
            if n == 0 && !first {
                return;
            }
            buf.truncate(n);
            let chunk = proto::ObjectChunk {
                object_id: if first { id.0 } else { 0 },
                data: buf.into(),
            };
            first = false;
            if tx.blocking_send(Ok(chunk)).is_err() || n == 0 {
                return; // the caller went away, or the object was empty
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Delete objects; unknown ids are ignored (deleting twice is not an error).
pub async fn delete(store: Arc<ObjectStore>, raw_ids: Vec<u64>) -> Result<(), Status> {
    let ids = raw_ids
        .into_iter()
        .map(object_id)
        .collect::<Result<Vec<_>, _>>()?;
    tokio::task::spawn_blocking(move || store.delete(&ids))
        .await
        .map_err(|e| Status::internal(format!("object I/O thread failed: {e}")))?;
    Ok(())
}
