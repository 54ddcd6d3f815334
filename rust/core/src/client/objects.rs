//! Moving objects to and from the head over gRPC, for clients and executors that are not on
//! the head's machine (those that are read and write the object files directly — see
//! [`crate::storage::ObjectStore`]). Uploads and downloads go in 1 MiB chunks; slicing a
//! `Bytes` is zero-copy, so an upload copies the object only into the HTTP/2 frames.

use std::time::Duration;

use bytes::Bytes;

use super::stamp::{stub, Frontend, StateStamp};
use crate::error::Result;
use crate::ids::ObjectId;
use crate::proto;

const CHUNK_BYTES: usize = 1 << 20;

/// Object calls on one channel (cheap to clone).
#[derive(Clone)]
pub struct ObjectClient {
    frontend: Frontend,
}

impl ObjectClient {
    pub fn new(frontend: Frontend) -> Self {
        Self { frontend }
    }

    /// Open a channel to the head at `address` with `creds` (no hello: objects need no
    /// client id).
    ///
    /// # Errors
    /// `Unreachable` naming the address when nothing answers within `timeout`; what
    /// resolving the credentials reports (see [`super::Transport::resolve`]).
    pub async fn connect(
        address: &str,
        creds: &super::Credentials,
        timeout: Duration,
    ) -> Result<Self> {
        let address = super::normalize_address(address);
        let transport = super::Transport::resolve(&address, creds, timeout).await?;
        let channel = transport.channel(timeout).await?;
        let stamp = StateStamp::default().with_bearer(transport.bearer().cloned());
        Ok(Self::new(stub(channel, stamp)))
    }

    /// Upload an object made of `parts` (written one after the other).
    ///
    /// # Errors
    /// What the head answered (`InvalidArgument` for a bad id, `Storage` when it cannot
    /// write), or `ConnectionLost`.
    pub async fn put(&self, id: ObjectId, parts: Vec<Bytes>) -> Result<u64> {
        let mut chunks = Vec::new();
        for part in parts {
            let mut at = 0;
            while at < part.len() {
                let end = (at + CHUNK_BYTES).min(part.len());
                chunks.push(part.slice(at..end));
                at = end;
            }
        }
        if chunks.is_empty() {
            chunks.push(Bytes::new());
        }
        let messages = chunks
            .into_iter()
            .enumerate()
            .map(move |(i, data)| proto::ObjectChunk {
                object_id: if i == 0 { id.0 } else { 0 },
                data,
            });
        let stored = self
            .frontend
            .clone()
            .put_object(tokio_stream::iter(messages))
            .await?
            .into_inner();
        Ok(stored.size)
    }

    /// Download an object whole.
    ///
    /// # Errors
    /// `NotFound` naming the object if the head does not have it; `ConnectionLost`.
    pub async fn get(&self, id: ObjectId) -> Result<Vec<u8>> {
        let mut stream = self
            .frontend
            .clone()
            .get_object(proto::ObjectRef { object_id: id.0 })
            .await?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }

    /// Delete objects (ids the head does not have are ignored).
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed id; `ConnectionLost`.
    pub async fn delete(&self, ids: &[ObjectId]) -> Result<()> {
        let req = proto::ObjectRefs {
            object_ids: ids.iter().map(|id| id.0).collect(),
        };
        self.frontend.clone().delete_objects(req).await?;
        Ok(())
    }
}
