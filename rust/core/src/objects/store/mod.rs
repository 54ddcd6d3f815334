//! A node's object store (#12): objects as files (header + data, see
//! [`crate::objects::format`]) in a memory dir, spilled to a disk dir under pressure.
//!
//! # Layout
//! - [`dirs`] — the memory and spill dirs, their removal, the sweep of dead nodes' dirs.
//! - [`budget`] — the accounting: primary vs cached copy, memory vs spilled, LRU order.
//! - [`writer`] — [`ObjectWriter`]: bytes in (transfers, uploads), an object out.
//! - [`types`] — the store's settings, figures, events and open files.
//! - this file — [`ObjectStore`], which ties them together.
//!
//! # Contract with local processes
//! A process of the node writes `<memory dir>/<id as 16 hex digits>` with
//! `flame._object_file.write_object` and calls `Seal(id, size)` on the node's socket
//! (`<memory dir>/node.sock`); the store then checks the header and the size and accounts
//! it as a primary copy. To read, a process maps `<memory dir>/<id>`, else
//! `<spill dir>/<id>` (the spill dir's path is in the file `<memory dir>/spill_dir`), else
//! calls `Pull([id])`, which restores a spilled object into memory (when it fits the
//! budget) or fetches it from another node, then maps again. Moves between the dirs make
//! the new file appear before the old one goes, so that order of looking never misses.
//!
//! # Memory pressure
//! The budget counts the data bytes of the objects in the memory dir. Over it, cached
//! copies go first (least recently used first; reported as removed), then primaries are
//! spilled (least recently used first); primaries are never deleted by pressure. An object
//! larger than the whole budget goes straight to the spill dir. A process that has an
//! object mapped keeps a valid mapping when the file is evicted or moved (Linux keeps an
//! unlinked file's pages while they are mapped), so nothing is pinned.
//!
//! Moving files happens under the store's lock (a spill is a rename, or a copy when the
//! dirs are on different filesystems): simple and correct; a large spill delays other
//! store calls meanwhile.

mod budget;
mod dirs;
mod types;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::error::{FlameError, Result};
use crate::ids::{ClientId, ObjectId};
use crate::objects::format::{check, HEADER_BYTES};
use crate::private_files::open_trusted;

use budget::{Action, Budget};
pub use budget::{Kind, Place};
pub use dirs::{SHM_ROOT, SOCKET_FILE, SPILL_DIR_FILE};
pub use types::{ObjectFile, ObjectStoreStats, StoreConfig, StoreEvent};
pub use writer::ObjectWriter;

/// One node's objects. Shared (`Arc`); every call takes one short lock.
#[derive(Debug)]
pub struct ObjectStore {
    dirs: dirs::StoreDirs,
    budget: Mutex<Budget>,
    events: Mutex<Option<mpsc::UnboundedSender<StoreEvent>>>,
    spilled_total: AtomicU64,
    transfers: AtomicU64,
    transferred: AtomicU64,
    closed: AtomicBool,
}

/// The name of an object's file, in either dir.
pub fn file_name(id: ObjectId) -> String {
    format!("{:016x}", id.0)
}

impl ObjectStore {
    /// Makes the store's dirs (sweeping those of dead nodes first).
    ///
    /// # Errors
    /// `InvalidArgument` for a budget of 0; `Storage` / `FailedPrecondition` naming a dir
    /// that cannot be made.
    pub fn open(config: &StoreConfig) -> Result<Arc<Self>> {
        if config.budget_bytes == 0 {
            return Err(FlameError::InvalidArgument(
                "the object store budget must be more than 0".into(),
            ));
        }
        let dirs = dirs::StoreDirs::create(&config.work_dir, config.shm_root.as_deref())?;
        Ok(Arc::new(ObjectStore {
            dirs,
            budget: Mutex::new(Budget::new(config.budget_bytes)),
            events: Mutex::new(None),
            spilled_total: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
            transferred: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }))
    }

    pub fn memory_dir(&self) -> &Path {
        &self.dirs.memory
    }

    pub fn spill_dir(&self) -> &Path {
        &self.dirs.spill
    }

    /// Where the node serves `NodeObjects` to local processes.
    pub fn socket_path(&self) -> PathBuf {
        self.dirs.memory.join(SOCKET_FILE)
    }

    /// Events from now on go to the receiver returned (one subscriber; a new one replaces
    /// the old).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<StoreEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// A writer for a new object of unknown size, in the memory dir.
    ///
    /// # Errors
    /// `AlreadyExists` when the id is stored; `Storage` when the file cannot be made.
    pub fn writer(self: &Arc<Self>, id: ObjectId) -> Result<ObjectWriter> {
        self.refuse_stored(id)?;
        ObjectWriter::create(self.clone(), id, Place::Memory, None)
    }

    /// A writer for a new object of `size` bytes: larger than the whole budget, it goes
    /// straight to the spill dir.
    ///
    /// # Errors
    /// As [`ObjectStore::writer`].
    pub fn writer_sized(self: &Arc<Self>, id: ObjectId, size: u64) -> Result<ObjectWriter> {
        self.refuse_stored(id)?;
        let place = if size > self.lock().limit() {
            Place::Spilled
        } else {
            Place::Memory
        };
        ObjectWriter::create(self.clone(), id, place, Some(size))
    }

    /// Adopts `<memory dir>/<id>`, written by a local process, as a primary copy of `size`
    /// data bytes. Sealing an object already held with the same size does nothing.
    ///
    /// # Errors
    /// `NotFound` when there is no such file; `FailedPrecondition` ("object X is damaged:
    /// ...") for a file that is not a whole object, and `InvalidArgument` for one whose
    /// size is not `size` — both files are removed; `AlreadyExists` for an id held with
    /// another size.
    pub fn seal(&self, id: ObjectId, size: u64) -> Result<()> {
        let mut budget = self.lock();
        if let Some(entry) = budget.get(id) {
            if entry.size == size {
                return Ok(());
            }
            return Err(FlameError::AlreadyExists(format!(
                "object {:#x} is already stored with {} bytes (sealed again as {size})",
                id.0, entry.size
            )));
        }
        let path = self.dirs.memory.join(file_name(id));
        let (_, len) = verify(id, &path).inspect_err(|_| remove_damaged(&path))?;
        if len != size {
            let _ = std::fs::remove_file(&path);
            return Err(FlameError::InvalidArgument(format!(
                "object {:#x} was sealed as {size} bytes but its file holds {len}; the file \
                 is removed",
                id.0
            )));
        }
        budget.insert(id, size, Kind::Primary, Place::Memory);
        self.fit(&mut budget, id);
        Ok(())
    }

    /// Opens object `id` for reading, restoring it into memory first when it was spilled
    /// and fits the budget; it counts as used (last to go under pressure).
    ///
    /// # Errors
    /// `NotFound` when the store does not hold it; `FailedPrecondition` ("object X is
    /// damaged: ...") when its file is no whole object any more: it is removed (and
    /// reported removed), never handed out.
    pub fn open_object(&self, id: ObjectId) -> Result<ObjectFile> {
        self.open_as(id, false)
    }

    /// [`ObjectStore::open_object`], and `id` stays in place (neither evicted nor spilled)
    /// until [`ObjectStore::release`] or `budget::PIN_LEASE`: a process that pulled it
    /// maps its file next.
    ///
    /// # Errors
    /// As [`ObjectStore::open_object`].
    pub fn open_pinned(&self, id: ObjectId) -> Result<ObjectFile> {
        self.open_as(id, true)
    }

    /// Drops one pin of each of `ids` ([`ObjectStore::open_pinned`]); a store over its
    /// budget makes room at once.
    pub fn release(&self, ids: &[ObjectId]) {
        let mut budget = self.lock();
        for id in ids {
            budget.unpin(*id);
        }
        self.settle(&mut budget, None);
    }

    fn open_as(&self, id: ObjectId, pin: bool) -> Result<ObjectFile> {
        let mut budget = self.lock();
        let Some(entry) = budget.get(id) else {
            return Err(FlameError::NotFound(format!(
                "object {:#x} is not in this node's store",
                id.0
            )));
        };
        if entry.place == Place::Spilled && entry.size <= budget.limit() {
            match self.move_file(id, Place::Spilled, Place::Memory) {
                Ok(()) => {
                    budget.set_place(id, Place::Memory);
                    self.settle(&mut budget, Some(id));
                }
                Err(e) => tracing::warn!("cannot restore object {:#x}: {e}", id.0),
            }
        }
        budget.touch(id);
        if pin {
            budget.pin(id);
        }
        let place = budget.get(id).map_or(entry.place, |e| e.place);
        let path = self.dir_of(place).join(file_name(id));
        match verify(id, &path) {
            Ok((mut file, size)) => {
                file.seek(SeekFrom::Start(HEADER_BYTES as u64))
                    .map_err(|e| storage(id, e))?;
                Ok(ObjectFile { file, size, path })
            }
            Err(e) => {
                budget.remove(id);
                remove_damaged(&path);
                self.emit(StoreEvent::Removed(vec![id]));
                Err(e)
            }
        }
    }

    pub fn contains(&self, id: ObjectId) -> bool {
        self.lock().get(id).is_some()
    }

    /// The data size and place of a held object.
    pub fn entry(&self, id: ObjectId) -> Option<(u64, Kind, Place)> {
        self.lock().get(id).map(|e| (e.size, e.kind, e.place))
    }

    /// Deletes these objects (every copy here, spilled or not; a file a process wrote but
    /// never sealed too); the ids that were held.
    pub fn delete(&self, ids: &[ObjectId]) -> Vec<ObjectId> {
        let mut budget = self.lock();
        let mut removed = Vec::new();
        for id in ids {
            match budget.remove(*id) {
                Some(entry) => {
                    let _ = std::fs::remove_file(self.dir_of(entry.place).join(file_name(*id)));
                    removed.push(*id);
                }
                None => {
                    let _ = std::fs::remove_file(self.dirs.memory.join(file_name(*id)));
                }
            }
        }
        if !removed.is_empty() {
            self.emit(StoreEvent::Removed(removed.clone()));
        }
        removed
    }

    /// Deletes every object `client` created; the ids deleted.
    pub fn delete_owner(&self, client: ClientId) -> Vec<ObjectId> {
        let ids = self.lock().ids_where(|id| id.owner() == client);
        self.delete(&ids)
    }

    /// Every object held, with its size (announced when the node registers).
    pub fn held(&self) -> Vec<(ObjectId, u64)> {
        self.lock().held()
    }

    pub fn stats(&self) -> ObjectStoreStats {
        let budget = self.lock();
        ObjectStoreStats {
            memory_bytes: budget.memory_bytes(),
            spilled_bytes: budget.spilled_bytes(),
            budget_bytes: budget.limit(),
            objects: budget.len() as u64,
            spilled_total_bytes: self.spilled_total.load(Ordering::Relaxed),
            transfers_total: self.transfers.load(Ordering::Relaxed),
            transferred_bytes: self.transferred.load(Ordering::Relaxed),
        }
    }

    /// Counts an object fetched from another node (for the heartbeat's counters).
    pub fn record_transfer(&self, bytes: u64) {
        self.transfers.fetch_add(1, Ordering::Relaxed);
        self.transferred.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Removes both dirs and everything in them (also done on drop).
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.dirs.remove();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse_stored(&self, id: ObjectId) -> Result<()> {
        if self.contains(id) {
            return Err(FlameError::AlreadyExists(format!(
                "object {:#x} is already stored on this node",
                id.0
            )));
        }
        Ok(())
    }

    pub(crate) fn dir_of(&self, place: Place) -> &Path {
        match place {
            Place::Memory => &self.dirs.memory,
            Place::Spilled => &self.dirs.spill,
        }
    }

    /// Links a finished writer's file `tmp` (in the dir of `place`) as object `id`.
    fn adopt_written(
        &self,
        id: ObjectId,
        tmp: &Path,
        size: u64,
        kind: Kind,
        place: Place,
    ) -> Result<()> {
        let mut budget = self.lock();
        if let Some(entry) = budget.get(id) {
            if kind == Kind::Cached && entry.size == size {
                return Ok(());
            }
            return Err(FlameError::AlreadyExists(format!(
                "object {:#x} is already stored on this node",
                id.0
            )));
        }
        let path = self.dir_of(place).join(file_name(id));
        std::fs::hard_link(tmp, &path).map_err(|e| storage(id, e))?;
        budget.insert(id, size, kind, place);
        if place == Place::Spilled {
            self.spilled_total.fetch_add(size, Ordering::Relaxed);
        } else {
            self.fit(&mut budget, id);
        }
        if kind == Kind::Cached {
            self.emit(StoreEvent::Added(vec![(id, size)]));
        }
        Ok(())
    }

    /// After `id` entered memory: larger than the whole budget it goes to disk at once,
    /// else others make room for it.
    fn fit(&self, budget: &mut Budget, id: ObjectId) {
        let size = budget.get(id).map_or(0, |e| e.size);
        if size > budget.limit() {
            self.spill(budget, id, size);
        }
        self.settle(budget, Some(id));
    }

    /// Carries out what the budget says must go, and reports evictions.
    fn settle(&self, budget: &mut Budget, protect: Option<ObjectId>) {
        let mut evicted = Vec::new();
        for action in budget.plan(protect) {
            match action {
                Action::Evict(id) => {
                    let _ = std::fs::remove_file(self.dirs.memory.join(file_name(id)));
                    evicted.push(id);
                }
                Action::Spill(id) => {
                    let size = budget.get(id).map_or(0, |e| e.size);
                    budget.set_place(id, Place::Memory);
                    self.spill(budget, id, size);
                }
            }
        }
        if !evicted.is_empty() {
            self.emit(StoreEvent::Removed(evicted));
        }
    }

    /// Moves a primary in memory to the spill dir; on failure it stays in memory.
    fn spill(&self, budget: &mut Budget, id: ObjectId, size: u64) {
        match self.move_file(id, Place::Memory, Place::Spilled) {
            Ok(()) => {
                budget.set_place(id, Place::Spilled);
                self.spilled_total.fetch_add(size, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("cannot spill object {:#x}: {e}", id.0),
        }
    }

    /// Moves an object's file between the dirs: the new file appears (whole) before the
    /// old one goes, so a reader that looks in memory, then in the spill dir, finds it.
    fn move_file(&self, id: ObjectId, from: Place, to: Place) -> std::io::Result<()> {
        let name = file_name(id);
        let (src, dst) = (self.dir_of(from).join(&name), self.dir_of(to).join(&name));
        match std::fs::rename(&src, &dst) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let tmp = self.dir_of(to).join(format!(".{name}.move"));
                std::fs::copy(&src, &tmp)?;
                std::fs::rename(&tmp, &dst)?;
                std::fs::remove_file(&src)
            }
            other => other,
        }
    }

    fn emit(&self, event: StoreEvent) {
        if let Some(tx) = &*self.events.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(event);
        }
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens an object file and checks its header; the file and the data length.
fn verify(id: ObjectId, path: &Path) -> Result<(File, u64)> {
    let file = match open_trusted(path) {
        Ok(opened) => opened?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FlameError::NotFound(format!(
                "object {:#x}: no file {} (write it into the store's memory dir before \
                 sealing it)",
                id.0,
                path.display()
            )))
        }
        Err(e) => return Err(storage(id, e)),
    };
    let len = file.metadata().map_err(|e| storage(id, e))?.len();
    let mut head = vec![0u8; HEADER_BYTES.min(len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| storage(id, e))?;
    let data = check(id, &head, len)?;
    Ok((file, data))
}

/// A file that failed its check goes (a missing one is nothing to remove).
fn remove_damaged(path: &Path) {
    if path.exists() {
        tracing::warn!(file = %path.display(), "removing a damaged object file");
        let _ = std::fs::remove_file(path);
    }
}

fn storage(id: ObjectId, e: std::io::Error) -> FlameError {
    FlameError::Storage(format!("object {:#x}: {e}", id.0))
}
