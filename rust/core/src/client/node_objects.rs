//! The client of a node's Unix socket (`<memory dir>/node.sock`), for processes of that
//! node (executors, a client of `flame-daemon start` or the embedded cluster): `seal` an
//! object file they wrote into the node's memory dir, `pull` objects to make them local.
//! The socket's dir is 0700: reaching it is the access check, so no credentials are sent.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{FlameError, Result};
use crate::ids::ObjectId;
use crate::proto::node_objects_client::NodeObjectsClient;
use crate::proto::{ObjectStored, PullRequest};

/// Executors' variable: the node's object socket.
pub const NODE_SOCKET_ENV: &str = "FLAME_NODE_SOCKET";
/// Executors' variable: the node's memory dir, where object files are written and mapped.
pub const NODE_OBJECTS_ENV: &str = "FLAME_NODE_OBJECTS";
/// The id of the cluster's state (its head's), set by a node for its executors (#12).
pub const CLUSTER_ENV: &str = "FLAME_CLUSTER";
/// Executors' variable: the node's id (as the head numbers nodes).
pub const NODE_ID_ENV: &str = "FLAME_NODE_ID";

/// A connection to a node's object socket. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeObjects {
    inner: NodeObjectsClient<Channel>,
    path: PathBuf,
}

impl NodeObjects {
    /// Connects to the socket at `path` (the variable `FLAME_NODE_SOCKET` of executors).
    ///
    /// # Errors
    /// `Unreachable` naming the socket when nothing listens there.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let unreachable = |reason: String| FlameError::Unreachable {
            address: path.display().to_string(),
            reason,
        };
        // The URI is only for HTTP/2's authority; the connector ignores it.
        let endpoint =
            Endpoint::try_from("http://node.sock").map_err(|e| unreachable(e.to_string()))?;
        let socket = path.clone();
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| unreachable(crate::error::error_chain(&e)))?;
        Ok(NodeObjects {
            inner: NodeObjectsClient::new(channel),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells the node that this process wrote object `id` (`size` data bytes) into its
    /// memory dir; the node checks the file and accounts it as a primary copy.
    ///
    /// # Errors
    /// The node's: `NotFound` (no such file), `FailedPrecondition` (damaged, removed),
    /// `InvalidArgument` (another size, removed), `AlreadyExists` (held with another size).
    pub async fn seal(&self, id: ObjectId, size: u64) -> Result<()> {
        let request = ObjectStored {
            object_id: id.0,
            size,
        };
        self.inner.clone().seal(request).await?;
        Ok(())
    }

    /// Makes these objects local (restored from the spill dir, or fetched from other
    /// nodes); their ids and sizes, in the order asked.
    ///
    /// # Errors
    /// The node's: `NotFound` naming an object no node holds, `Unreachable`, ...
    pub async fn pull(&self, ids: &[ObjectId]) -> Result<Vec<(ObjectId, u64)>> {
        self.pull_as(ids, false).await
    }

    /// [`NodeObjects::pull`], and the node keeps each object where it is (not evicted,
    /// not spilled) until [`NodeObjects::release`] — for a caller that maps the files next.
    ///
    /// # Errors
    /// As [`NodeObjects::pull`].
    pub async fn pull_pinned(&self, ids: &[ObjectId]) -> Result<Vec<(ObjectId, u64)>> {
        self.pull_as(ids, true).await
    }

    /// The caller has mapped these objects pulled with [`NodeObjects::pull_pinned`].
    ///
    /// # Errors
    /// `InvalidArgument` for id 0; the connection's.
    pub async fn release(&self, ids: &[ObjectId]) -> Result<()> {
        let request = PullRequest {
            object_ids: ids.iter().map(|id| id.0).collect(),
            pin: false,
        };
        self.inner.clone().release(request).await?;
        Ok(())
    }

    async fn pull_as(&self, ids: &[ObjectId], pin: bool) -> Result<Vec<(ObjectId, u64)>> {
        let request = PullRequest {
            object_ids: ids.iter().map(|id| id.0).collect(),
            pin,
        };
        let reply = self.inner.clone().pull(request).await?.into_inner();
        Ok(reply
            .objects
            .into_iter()
            .map(|o| (ObjectId(o.object_id), o.size))
            .collect())
    }
}
