//! Writing an object into the store: [`ObjectWriter`] takes the bytes (a transfer from
//! another node, an upload) and [`ObjectWriter::commit`] makes them an object.
//!
//! The length is known only at the end (an upload's chunks do not say it up front), so the
//! writer reserves the header with zeros, appends the data, and writes the real header at
//! commit. The file is written under a temporary name and linked to its final name only
//! then: readers never see a partial object, and an id already stored is never replaced.
//! A writer dropped without commit removes its file.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{FlameError, Result};
use crate::ids::ObjectId;
use crate::objects::format::{header, HEADER_BYTES};
use crate::private_files::private_options;

use super::budget::{Kind, Place};
use super::ObjectStore;

/// A new object being written. Made by [`ObjectStore::writer`].
#[derive(Debug)]
pub struct ObjectWriter {
    store: Arc<ObjectStore>,
    id: ObjectId,
    file: Option<File>,
    tmp: PathBuf,
    place: Place,
    written: u64,
    expected: Option<u64>,
}

impl ObjectWriter {
    pub(super) fn create(
        store: Arc<ObjectStore>,
        id: ObjectId,
        place: Place,
        expected: Option<u64>,
    ) -> Result<Self> {
        let dir = store.dir_of(place);
        let tmp = dir.join(format!(
            ".{:016x}.{}.part",
            id.0,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let io = |e: std::io::Error| {
            FlameError::Storage(format!("cannot write object {:#x}: {e}", id.0))
        };
        let mut file = private_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&[0u8; HEADER_BYTES]).map_err(io)?;
        Ok(ObjectWriter {
            store,
            id,
            file: Some(file),
            tmp,
            place,
            written: 0,
            expected,
        })
    }

    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Bytes of data written so far (a transfer resumes from here).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`.
    ///
    /// # Errors
    /// `InvalidArgument` past the size given to [`ObjectStore::writer_sized`]; `Storage`
    /// when the file cannot be written (disk or memory full).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let end = self.written + data.len() as u64;
        if let Some(expected) = self.expected.filter(|e| end > *e) {
            return Err(FlameError::InvalidArgument(format!(
                "object {:#x} is {expected} bytes; {end} were sent",
                self.id.0
            )));
        }
        let file = self.file.as_mut().ok_or_else(|| closed(self.id))?;
        file.write_all(data).map_err(|e| {
            FlameError::Storage(format!("cannot write object {:#x}: {e}", self.id.0))
        })?;
        self.written = end;
        Ok(())
    }

    /// Stores the object as this node's primary copy (an upload); its size.
    ///
    /// # Errors
    /// `AlreadyExists` when the id is stored already; those of [`ObjectWriter::commit`].
    pub fn commit_primary(self) -> Result<u64> {
        self.commit(Kind::Primary)
    }

    /// Stores the object as a cached copy (fetched from another node; announced to the
    /// head as `objects_added`); its size. A copy already there is kept and this one
    /// dropped (two fetches of one object).
    ///
    /// # Errors
    /// Those of [`ObjectWriter::commit`].
    pub fn commit_copy(self) -> Result<u64> {
        self.commit(Kind::Cached)
    }

    /// Writes the header and links the file under its final name.
    ///
    /// # Errors
    /// `InvalidArgument` when fewer bytes came than the size given up front; `Storage`
    /// when the file cannot be finished.
    fn commit(mut self, kind: Kind) -> Result<u64> {
        let id = self.id;
        if let Some(expected) = self.expected.filter(|e| *e != self.written) {
            return Err(FlameError::InvalidArgument(format!(
                "object {:#x} is {expected} bytes; only {} were sent",
                id.0, self.written
            )));
        }
        let file = self.file.take().ok_or_else(|| closed(id))?;
        file.write_all_at(&header(id, self.written), 0)
            .map_err(|e| FlameError::Storage(format!("cannot write object {:#x}: {e}", id.0)))?;
        drop(file);
        let result = self
            .store
            .adopt_written(id, &self.tmp, self.written, kind, self.place);
        let _ = std::fs::remove_file(&self.tmp);
        result.map(|()| self.written)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn closed(id: ObjectId) -> FlameError {
    FlameError::Internal(format!("object {:#x}: writer already finished", id.0))
}
