//! Objects for a process that runs on no node of the cluster (#12): [`ObjectClient::
//! place_and_put`] stores a new object on the node the head picks, and [`ObjectClient::
//! locate_and_fetch`] reads one from the nodes that hold it (resuming a broken stream,
//! trying the next holder) — the bytes never pass through the head
//! ([`crate::objects::transfer`]); [`ObjectClient::delete`] asks the head to delete objects
//! from every node holding them.

use std::time::Duration;

use bytes::Bytes;

use super::stamp::{stub, Frontend, StateStamp};
use crate::error::{FlameError, Result};
use crate::ids::ObjectId;
use crate::objects::transfer::{self, Dialer};
use crate::proto;

/// How often an object being rebuilt is looked up again.
const REBUILD_POLL: Duration = Duration::from_millis(200);
/// How long dialing a node's object server may take.
const DIAL: Duration = Duration::from_secs(10);

/// Object calls on one channel (cheap to clone).
#[derive(Clone)]
pub struct ObjectClient {
    frontend: Frontend,
    /// Nodes' object servers, with this client's credentials (`None`: head calls only).
    dialer: Option<Dialer>,
}

/// Where [`ObjectClient::place_and_put`] stored an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedObject {
    pub node_id: u64,
    pub node_name: String,
    pub size: u64,
}

impl ObjectClient {
    /// Head calls only (`delete`); see [`ObjectClient::with_nodes`].
    pub fn new(frontend: Frontend) -> Self {
        Self {
            frontend,
            dialer: None,
        }
    }

    /// This client, also reaching nodes' object servers with the credentials of
    /// `transport` (and `identity`, a node certificate, if given).
    pub fn with_nodes(
        mut self,
        transport: &super::Transport,
        identity: Option<crate::tls::Identity>,
    ) -> Self {
        self.dialer = Some(Dialer::for_transport(transport, identity, DIAL));
        self
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
        Ok(Self::new(stub(channel, stamp)).with_nodes(&transport, creds.identity.clone()))
    }

    /// Delete objects from every node that holds them (unknown ids are ignored).
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

    /// Store a new object made of `parts` on a node of the cluster, for a client that runs
    /// on no node: the head chooses the node (`PlaceObject`), then the bytes go straight to
    /// it (`NodeObjects.Put`). The caller then announces the object on its task stream
    /// (`ClientMessage.created` with the returned node).
    ///
    /// # Errors
    /// What the head answers (no node can take it: `Unavailable`); what the node answers
    /// (`PermissionDenied` naming the object, a full store); `Unreachable`.
    pub async fn place_and_put(&self, id: ObjectId, parts: Vec<Bytes>) -> Result<PlacedObject> {
        let dialer = self.dialer()?;
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let req = proto::ObjectStored {
            object_id: id.0,
            size,
        };
        let holder = self.frontend.clone().place_object(req).await?.into_inner();
        if holder.address.is_empty() {
            return Err(FlameError::Unreachable {
                address: format!("node {}", holder.node_name),
                reason: format!("the node chosen for object {:#x} serves no objects", id.0),
            });
        }
        let size = transfer::put(dialer, &holder, id, parts).await?;
        Ok(PlacedObject {
            node_id: holder.node_id,
            node_name: holder.node_name,
            size,
        })
    }

    /// Read an object from the nodes that hold it, for a client that runs on no node: ask
    /// the head where it is (`LocateObjects`), then fetch it from the first holder, resuming
    /// a broken stream and trying the next holder on failure. An object being rebuilt (its
    /// node was lost and its task runs again) is waited for, up to `rebuild_wait`; so are
    /// holders that no longer answer (a node that just died and that the head has not yet
    /// declared lost): the head is asked again until it names other holders or a rebuild.
    ///
    /// # Errors
    /// `NotFound` naming the object and why when no node holds it; `ConnectionLost` when no
    /// holder could send it within `rebuild_wait`; `Unauthenticated` / `PermissionDenied`
    /// from the holders.
    pub async fn locate_and_fetch(&self, id: ObjectId, rebuild_wait: Duration) -> Result<Vec<u8>> {
        let dialer = self.dialer()?;
        let until = tokio::time::Instant::now() + rebuild_wait;
        loop {
            let location = locate(&self.frontend, id).await?;
            if location.holders.is_empty() {
                if !location.rebuilding {
                    return Err(FlameError::NotFound(if location.lost.is_empty() {
                        format!("object {:#x} is held by no node", id.0)
                    } else {
                        location.lost
                    }));
                }
                if tokio::time::Instant::now() >= until {
                    return Err(FlameError::Timeout(format!(
                        "object {:#x} is still being rebuilt after {rebuild_wait:?}",
                        id.0
                    )));
                }
                tokio::time::sleep(REBUILD_POLL).await;
                continue;
            }
            let capacity = usize::try_from(location.size).unwrap_or(0).min(1 << 30);
            let mut data = Vec::with_capacity(capacity);
            match transfer::fetch(dialer, id, location.size, &location.holders, &mut data).await {
                Ok(_) => return Ok(data),
                Err(e @ FlameError::ConnectionLost(_))
                    if tokio::time::Instant::now() + REBUILD_POLL < until =>
                {
                    tracing::debug!(
                        object = id.0,
                        "no holder answered; asking the head again: {e}"
                    );
                    tokio::time::sleep(REBUILD_POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn dialer(&self) -> Result<&Dialer> {
        self.dialer.as_ref().ok_or_else(|| {
            FlameError::InvalidArgument(
                "this object client was made without credentials for nodes (ObjectClient::new); \
                 use ObjectClient::connect or Client::objects"
                    .into(),
            )
        })
    }
}

/// Where the head says object `id` is (`LocateObjects` for one id).
///
/// # Errors
/// What the call returns; `Internal` when the answer leaves `id` out.
pub async fn locate(frontend: &Frontend, id: ObjectId) -> Result<proto::ObjectLocation> {
    let req = proto::ObjectRefs {
        object_ids: vec![id.0],
    };
    let found = frontend.clone().locate_objects(req).await?.into_inner();
    found
        .objects
        .into_iter()
        .find(|l| l.object_id == id.0)
        .ok_or_else(|| {
            FlameError::Internal(format!("the head did not say where object {:#x} is", id.0))
        })
}
