//! The node's store (`flame_core::objects::store`) as the object server and the fetcher see
//! it ([`ObjectFiles`]), and the fetcher as the store's [`RemoteFetch`]: a local process's
//! `Pull` of an object the node lacks becomes a transfer from another node.

use std::fs::File;
use std::sync::Arc;

use flame_core::error::{FlameError, Result};
use flame_core::ids::ObjectId;
use flame_core::objects::remote::RemoteFetch;
use flame_core::objects::store::{ObjectStore, ObjectWriter};

use super::{Fetcher, ObjectFileWriter, ObjectFiles};

/// A store writer that knows whether it makes a primary (a `Put`) or a cached copy (a
/// fetch from another node).
pub struct StoreWriter {
    writer: ObjectWriter,
    copy: bool,
    store: Arc<ObjectStore>,
}

impl ObjectFiles for ObjectStore {
    type Writer = StoreWriter;

    fn read(&self, id: ObjectId) -> Result<(File, u64)> {
        let opened = self.open_object(id)?;
        Ok((opened.file, opened.size))
    }

    fn create(
        self: &Arc<Self>,
        id: ObjectId,
        size: Option<u64>,
        copy: bool,
    ) -> Result<StoreWriter> {
        let writer = match size {
            Some(n) => self.writer_sized(id, n)?,
            None => self.writer(id)?,
        };
        Ok(StoreWriter {
            writer,
            copy,
            store: self.clone(),
        })
    }
}

impl ObjectFileWriter for StoreWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.writer.write(data)
    }

    fn commit(self) -> Result<u64> {
        if self.copy {
            let n = self.writer.commit_copy()?;
            self.store.record_transfer(n);
            Ok(n)
        } else {
            self.writer.commit_primary()
        }
    }
}

#[tonic::async_trait]
impl RemoteFetch for Fetcher<ObjectStore> {
    async fn fetch(&self, _store: Arc<ObjectStore>, id: ObjectId) -> Result<u64> {
        Fetcher::fetch(self, id).await.map_err(|e| match e {
            // The head's answer names the object and why nobody has it.
            FlameError::NotFound(m) => FlameError::NotFound(m),
            FlameError::InvalidArgument(m) => FlameError::InvalidArgument(m),
            other => FlameError::FailedPrecondition(format!(
                "object {id} is not on this node and could not be fetched from another: {other}"
            )),
        })
    }
}
