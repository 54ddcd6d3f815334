//! What a store is given and gives back: its settings, its figures (for heartbeats), the
//! events the node reports to the head, and an object opened for reading.

use std::fs::File;
use std::path::PathBuf;

use crate::ids::ObjectId;

use super::SHM_ROOT;

/// Where a store lives and how much memory it may hold.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes of object data the memory dir may hold.
    pub budget_bytes: u64,
    /// The node's work dir: the spill dir (and the memory dir without a tmpfs) go here.
    pub work_dir: PathBuf,
    /// Where a tmpfs for the memory dir is looked for; `None`: the work dir.
    pub shm_root: Option<PathBuf>,
}

impl StoreConfig {
    pub fn new(work_dir: impl Into<PathBuf>, budget_bytes: u64) -> Self {
        StoreConfig {
            budget_bytes,
            work_dir: work_dir.into(),
            shm_root: Some(PathBuf::from(SHM_ROOT)),
        }
    }
}

/// A store's figures (a heartbeat carries them to the head).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectStoreStats {
    pub memory_bytes: u64,
    pub spilled_bytes: u64,
    pub budget_bytes: u64,
    pub objects: u64,
    /// Bytes ever spilled (a counter), including objects stored on disk directly.
    pub spilled_total_bytes: u64,
    pub transfers_total: u64,
    pub transferred_bytes: u64,
}

impl From<ObjectStoreStats> for crate::proto::ObjectStoreStats {
    fn from(s: ObjectStoreStats) -> Self {
        crate::proto::ObjectStoreStats {
            memory_bytes: s.memory_bytes,
            spilled_bytes: s.spilled_bytes,
            budget_bytes: s.budget_bytes,
            objects: s.objects,
            spilled_total_bytes: s.spilled_total_bytes,
            transfers_total: s.transfers_total,
            transferred_bytes: s.transferred_bytes,
        }
    }
}

impl From<crate::proto::ObjectStoreStats> for ObjectStoreStats {
    fn from(s: crate::proto::ObjectStoreStats) -> Self {
        ObjectStoreStats {
            memory_bytes: s.memory_bytes,
            spilled_bytes: s.spilled_bytes,
            budget_bytes: s.budget_bytes,
            objects: s.objects,
            spilled_total_bytes: s.spilled_total_bytes,
            transfers_total: s.transfers_total,
            transferred_bytes: s.transferred_bytes,
        }
    }
}

/// What the node tells the head about its store, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Cached copies stored (fetched from other nodes).
    Added(Vec<(ObjectId, u64)>),
    /// Objects gone: evicted copies, deleted or damaged objects.
    Removed(Vec<ObjectId>),
}

/// An object opened for reading: the file positioned at the first data byte.
#[derive(Debug)]
pub struct ObjectFile {
    pub file: File,
    pub size: u64,
    pub path: PathBuf,
}
