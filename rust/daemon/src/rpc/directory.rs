//! The Frontend's object directory calls (#12): `LocateObjects`, `PlaceObject`,
//! `ListObjects`, and the directory half of `DeleteObjects`. Each validates its input,
//! authorizes, and asks the session manager, which keeps the directory.
//!
//! Who may ask: a user about the objects of its own clients (an admin about any); a node
//! itself (its credentials, no executor header) may locate any object — a node fetches for
//! its executors, and the objects it serves are checked again by their own server.

use tonic::{Request, Response, Status};

use flame_core::ids::{NodeId, ObjectId};
use flame_core::proto;

use super::access::{self, Access};
use crate::session_manager::{Event, ManagerHandle, ObjectEvent};

/// Most ids one `LocateObjects` or `DeleteObjects` call may name.
pub const MAX_IDS: usize = 100_000;
/// `ListObjects` page sizes: the default, and the most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Check the ids of a call: not too many, each with an owner (a client id in its high bits).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad id.
pub fn object_ids(raw: &[u64]) -> Result<Vec<ObjectId>, Status> {
    if raw.len() > MAX_IDS {
        return Err(Status::invalid_argument(format!(
            "{} object ids in one call; at most {MAX_IDS} are accepted",
            raw.len()
        )));
    }
    raw.iter()
        .map(|&r| {
            let id = ObjectId(r);
            if id.owner().0 == 0 {
                return Err(Status::invalid_argument(format!(
                    "object id {r:#x} is not valid: its high 32 bits must be the id of the \
                     client that made it"
                )));
            }
            Ok(id)
        })
        .collect()
}

/// The caller may read these objects.
async fn may_read<T>(access: &Access, req: &Request<T>, ids: &[ObjectId]) -> Result<(), Status> {
    let claim = access::claim(req)?;
    if claim.is_node_itself() {
        return Ok(());
    }
    let caller = access.caller(claim).await?;
    for id in ids {
        access.object(&caller, id.0)?;
    }
    Ok(())
}

pub async fn locate(
    access: &Access,
    handle: &ManagerHandle,
    req: Request<proto::ObjectRefs>,
) -> Result<Response<proto::ObjectLocations>, Status> {
    let ids = object_ids(&req.get_ref().object_ids)?;
    may_read(access, &req, &ids).await?;
    let objects = handle
        .call(|reply| Event::Objects(ObjectEvent::Locate { ids, reply }))
        .await?;
    Ok(Response::new(proto::ObjectLocations { objects }))
}

pub async fn place(
    access: &Access,
    handle: &ManagerHandle,
    req: Request<proto::ObjectStored>,
) -> Result<Response<proto::ObjectHolder>, Status> {
    let caller = access.of(&req).await?;
    let r = req.into_inner();
    let id = object_ids(&[r.object_id])?[0];
    access.object(&caller, id.0)?;
    let size = r.size;
    let holder = handle
        .call(|reply| Event::Objects(ObjectEvent::Place { size, reply }))
        .await?;
    Ok(Response::new(holder))
}

pub async fn list(
    access: &Access,
    handle: &ManagerHandle,
    req: Request<proto::ListObjectsRequest>,
) -> Result<Response<proto::ObjectList>, Status> {
    let caller = access.of(&req).await?;
    let r = req.into_inner();
    let limit = match r.limit as usize {
        0 => DEFAULT_PAGE,
        n if n > MAX_PAGE => {
            return Err(Status::invalid_argument(format!(
                "limit is {n}; at most {MAX_PAGE} objects are listed per call (use offset to page)"
            )))
        }
        n => n,
    };
    let node = (r.node_id != 0).then_some(NodeId(r.node_id));
    let mut all = handle
        .call(|reply| Event::Objects(ObjectEvent::List { node, reply }))
        .await?;
    // A user sees the objects of its own clients.
    all.retain(|o| access.object(&caller, o.object_id).is_ok());
    let total = all.len() as u64;
    let objects = all
        .into_iter()
        .skip(r.offset as usize)
        .take(limit)
        .collect();
    Ok(Response::new(proto::ObjectList { objects, total }))
}

/// Forget these (authorized) objects and have every node holding them delete them.
///
/// # Errors
/// `UNAVAILABLE` when the session manager is stopping.
pub async fn delete(handle: &ManagerHandle, ids: Vec<ObjectId>) -> Result<(), Status> {
    handle
        .call(|reply| Event::Objects(ObjectEvent::Delete { ids, reply }))
        .await?;
    Ok(())
}
