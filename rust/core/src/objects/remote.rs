//! The seam between a node's store and the other nodes: when a local process pulls an
//! object the store lacks, the node asks a [`RemoteFetch`] to bring it. The node TCP
//! object server's side of #12 implements it (locate the object through the head, fetch it
//! from a holder); a node without one answers NOT_FOUND for objects it does not hold.

use std::sync::Arc;

use crate::error::Result;
use crate::ids::ObjectId;
use crate::objects::store::ObjectStore;

/// Brings objects from other nodes into this node's store.
#[tonic::async_trait]
pub trait RemoteFetch: Send + Sync + std::fmt::Debug + 'static {
    /// Makes object `id` local: finds a node that holds it, fetches its bytes and stores
    /// them in `store` as a cached copy (`store.writer_sized(id, size)?`, `write`,
    /// `commit_copy()`, which also announces the copy to the head); its size.
    ///
    /// The node calls this once per missing object of a `Pull`; calls for different
    /// objects run at once, and two pulls of the same object may call it twice at the same
    /// time (an implementation joins them into one transfer).
    ///
    /// # Errors
    /// `NotFound` naming the object when no node holds it (unknown, deleted, or lost with
    /// its node: say which); `Unreachable` when no holder answered; `FailedPrecondition`
    /// ("object X is damaged") when every copy fetched failed its check.
    async fn fetch(&self, store: Arc<ObjectStore>, id: ObjectId) -> Result<u64>;
}
