//! The Frontend's `AuthorizeObjects` (#12): a node's object server asks whether the bearer
//! of a token may read (or write) some objects. Only nodes may ask (their certificate or
//! node token). The token is authenticated as the auth interceptor would (known, not
//! expired, not revoked), then the object rules of `security::authz` apply: a user may use
//! the objects of its own clients, an admin and a node any object.

use tonic::{Request, Response, Status};

use flame_core::auth::Principal;
use flame_core::proto;

use super::access::Access;
use crate::security::authz::Caller;
use crate::security::interceptor::{check_token, Accepted};
use crate::security::principal;

/// Longest list of objects one question may name.
const MAX_IDS: usize = 10_000;

/// Answer a node's question about `token`.
///
/// # Errors
/// `PERMISSION_DENIED` for a caller that is not a node, or naming the first object the
/// token's user may not use; `UNAUTHENTICATED` for a token the head refuses (saying why);
/// `INVALID_ARGUMENT` for no token or too many ids.
pub fn authorize_objects(
    access: &Access,
    accepted: &Accepted,
    req: Request<proto::ObjectAccess>,
) -> Result<Response<proto::ObjectAccessReply>, Status> {
    match principal(&req)? {
        Principal::Node { .. } => {}
        other => {
            return Err(Status::permission_denied(format!(
                "only nodes may ask AuthorizeObjects; you are {other}"
            )))
        }
    }
    let proto::ObjectAccess {
        token, object_ids, ..
    } = req.into_inner();
    if token.is_empty() {
        return Err(Status::invalid_argument("AuthorizeObjects: token is empty"));
    }
    if object_ids.len() > MAX_IDS {
        return Err(Status::invalid_argument(format!(
            "AuthorizeObjects: {} object ids; at most {MAX_IDS} per question",
            object_ids.len()
        )));
    }
    let who = check_token(&access.security, accepted, &token)?;
    if let Principal::User { name, admin } = &who {
        let caller = Caller {
            name: name.clone(),
            admin: *admin,
        };
        for id in object_ids {
            access.object(&caller, id)?;
        }
    }
    Ok(Response::new(proto::ObjectAccessReply {
        principal: who.to_string(),
    }))
}
