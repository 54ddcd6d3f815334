//! [`ObjectFiles`] on the head's file store of today (`flame_core::storage::ObjectStore`:
//! one file per object, written under a temporary name and linked into place), so the
//! object server and transfers run end to end before the node store of #12 replaces it
//! (that store implements [`ObjectFiles`] the same way; the node agent then passes it).

use std::fs::File;
use std::sync::Arc;

use flame_core::error::{FlameError, Result};
use flame_core::ids::ObjectId;
use flame_core::storage::{ObjectStore, ObjectWriter};

use super::{ObjectFileWriter, ObjectFiles};

impl ObjectFiles for ObjectStore {
    type Writer = ObjectWriter;

    fn read(&self, id: ObjectId) -> Result<(File, u64)> {
        let file = self.open_object(id)?;
        let len = file
            .metadata()
            .map_err(|e| FlameError::Storage(format!("object {:#x}: {e}", id.0)))?
            .len();
        Ok((file, len))
    }

    fn create(
        self: &Arc<Self>,
        id: ObjectId,
        _size: Option<u64>,
        _copy: bool,
    ) -> Result<ObjectWriter> {
        self.writer(id)
    }
}

impl ObjectFileWriter for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        ObjectWriter::write(self, data)
    }

    fn commit(self) -> Result<u64> {
        ObjectWriter::commit(self)
    }
}
