//! The Frontend's side of authorization (#11): who a call acts for ([`Caller`]) and whether
//! it may touch a session or an object. The rules are `security::authz`; this file looks up
//! what they need — the executor behind a node's call (the actor), a session's user (cached
//! in `security::owners`, else read), an object's client's user.

use std::sync::Arc;

use flame_core::auth::Principal;
use flame_core::ids::{ExecutorId, ObjectId, SessionId};
use tonic::{Request, Status};

use crate::reads::Reads;
use crate::security::authz::{self, Caller};
use crate::security::{self, Security};
use crate::session_manager::Event;

/// What a request says about its caller, taken out of it before any `await` (a borrowed
/// request would tie the handler's future to it).
pub struct Claim {
    principal: Principal,
    executor: Option<ExecutorId>,
}

impl Claim {
    /// A node calling for itself (its credentials, no executor named): a peer locating the
    /// objects it fetches (#12).
    pub fn is_node_itself(&self) -> bool {
        matches!(self.principal, Principal::Node { .. }) && self.executor.is_none()
    }
}

/// The claim of `req`.
///
/// # Errors
/// `UNAUTHENTICATED` when the call carries no credentials.
pub fn claim<T>(req: &Request<T>) -> Result<Claim, Status> {
    let principal = security::principal(req)?.clone();
    let executor = match principal {
        Principal::Node { .. } => flame_core::client::opened_by_executor(req),
        Principal::User { .. } => None,
    };
    Ok(Claim {
        principal,
        executor,
    })
}

/// Authorization lookups for the Frontend.
#[derive(Clone)]
pub struct Access {
    pub security: Arc<Security>,
    reads: Reads,
}

impl Access {
    pub fn new(security: Arc<Security>, reads: Reads) -> Self {
        Self { security, reads }
    }

    /// The user the call acts for.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` for a node's call that is not one of its executors'.
    pub async fn caller(&self, claim: Claim) -> Result<Caller, Status> {
        let executor = match claim.executor {
            Some(id) => {
                let place = self
                    .reads
                    .manager()
                    .call(|reply| Event::ExecutorPlace { id, reply })
                    .await?;
                Some((id.0, place))
            }
            None => None,
        };
        authz::frontend_caller(&claim.principal, executor)
    }

    /// [`claim`] and [`Access::caller`] in one.
    ///
    /// # Errors
    /// As both.
    pub async fn of<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let claim = claim(req)?;
        self.caller(claim).await
    }

    /// The user owning `session` (read once, then cached: it never changes).
    ///
    /// # Errors
    /// `SessionNotFound` for an id never handed out; `Busy` when reads are saturated.
    pub async fn session_owner(&self, session: SessionId) -> Result<String, Status> {
        if let Some(u) = self.security.owners.session(session) {
            return Ok(u);
        }
        let info = self.reads.session(session).await?;
        let user = info.spec.map(|s| s.user).unwrap_or_default();
        self.security.owners.set_session(session, &user);
        Ok(user)
    }

    /// The caller may act on `session`.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` (or the lookup's error).
    pub async fn session(&self, caller: &Caller, session: SessionId) -> Result<(), Status> {
        if caller.admin {
            return Ok(());
        }
        let owner = self.session_owner(session).await?;
        authz::session_access(caller, session, &owner)
    }

    /// The caller may read, write or delete object `raw` (owned by its client's user).
    ///
    /// # Errors
    /// `PERMISSION_DENIED` naming the owner.
    pub fn object(&self, caller: &Caller, raw: u64) -> Result<(), Status> {
        let client = ObjectId(raw).owner().0;
        let owner = self.security.owners.client(client);
        authz::object_access(caller, raw, owner.as_deref())
    }

    /// Record the user of a client id handed out at a hello (the first user keeps it).
    ///
    /// # Errors
    /// `PERMISSION_DENIED` when `client` belongs to another user.
    pub fn claim_client(&self, caller: &Caller, client: u32) -> Result<(), Status> {
        if client == 0 {
            return Ok(());
        }
        match self.security.owners.client(client) {
            Some(owner) if !caller.owns(&owner) => Err(Status::permission_denied(format!(
                "client {client} belongs to user {owner}; you are {}",
                caller.name
            ))),
            Some(_) => Ok(()),
            None => {
                self.security.owners.set_client(client, &caller.name);
                Ok(())
            }
        }
    }
}

/// The sessions one task stream may use: each session's owner is checked the first time the
/// stream names it (a lookup per session per stream, never per task).
pub struct SessionGate {
    access: Access,
    caller: Caller,
    allowed: std::collections::HashSet<SessionId>,
}

impl SessionGate {
    pub fn new(access: Access, caller: Caller) -> Self {
        Self {
            access,
            caller,
            allowed: std::collections::HashSet::new(),
        }
    }

    /// The stream may send `ev` (a submit, watch or cancel of one session).
    ///
    /// # Errors
    /// `PERMISSION_DENIED` for another user's session. An unknown session passes: the actor
    /// answers its tasks as failed, as before.
    pub async fn check(&mut self, ev: &Event) -> Result<(), Status> {
        let session = match ev {
            Event::Submit { session, .. }
            | Event::Watch { session, .. }
            | Event::Cancel { session, .. } => *session,
            _ => return Ok(()),
        };
        if self.caller.admin || session.0 == 0 || self.allowed.contains(&session) {
            return Ok(());
        }
        match self.access.session(&self.caller, session).await {
            Ok(()) => {
                self.allowed.insert(session);
                Ok(())
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => Err(s),
            Err(_) => Ok(()),
        }
    }
}
