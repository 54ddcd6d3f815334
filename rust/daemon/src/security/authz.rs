//! Who may do what (#11), as small pure functions the services call with what they know:
//! the caller's [`Principal`] and the owner of what it asks for. Nothing here reads state;
//! the services look the owner up (`super::owners`) and the executor's node and session (the
//! actor) and hand them in, so every rule is testable on its own.
//!
//! The rules:
//! - A user acts on the sessions, tasks, logs and objects of its own user name; an admin on
//!   everything. A session belongs to the `user` it was opened with, which is the opener's
//!   own name (only an admin may name another user with `user=`).
//! - A node principal may use the Backend; on the Frontend only with the executor header of
//!   one of its executors, and then it acts as the user who owns that executor's session.
//! - A user principal may not use the Backend; a node registers only under its own name.

use flame_core::auth::Principal;
use flame_core::ids::SessionId;
use tonic::Status;

/// The user a Frontend call acts for: its own token's user, or the owner of the session an
/// executor of the calling node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

impl Caller {
    /// Whether this caller may act on something owned by `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        self.admin || self.name == owner
    }
}

/// What the head knows of the executor named by a node's Frontend call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorPlace {
    /// The name of the node the executor runs on.
    pub node: String,
    /// The user owning the session it is bound (or binding) to, if any.
    pub user: Option<String>,
}

/// The caller of a Frontend call. `executor` is the executor the call names by header (its
/// id, and where the head placed it, `None` if the head knows no such executor).
///
/// # Errors
/// `PERMISSION_DENIED` for a node without an executor header, with an executor of another
/// node, or with one that runs no session.
pub fn frontend_caller(
    principal: &Principal,
    executor: Option<(u64, Option<ExecutorPlace>)>,
) -> Result<Caller, Status> {
    match principal {
        Principal::User { name, admin } => Ok(Caller {
            name: name.clone(),
            admin: *admin,
        }),
        Principal::Node { name } => {
            let Some((id, place)) = executor else {
                return Err(Status::permission_denied(format!(
                    "node certificates can use only the Backend (node {name} called the \
                     Frontend without the flame-executor-id header of one of its executors)"
                )));
            };
            let place = place.filter(|p| p.node == *name).ok_or_else(|| {
                Status::permission_denied(format!(
                    "executor {id} does not run on node {name}; a node acts only for its own \
                     executors"
                ))
            })?;
            let user = place.user.ok_or_else(|| {
                Status::permission_denied(format!(
                    "executor {id} of node {name} runs no session, so it acts for no user"
                ))
            })?;
            Ok(Caller {
                name: user,
                admin: false,
            })
        }
    }
}

/// The caller may act on `session`, owned by `owner`.
///
/// # Errors
/// `PERMISSION_DENIED` naming the owner and the caller.
pub fn session_access(caller: &Caller, session: SessionId, owner: &str) -> Result<(), Status> {
    if caller.owns(owner) {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "session {} belongs to user {owner}; you are {}",
        session.0, caller.name
    )))
}

/// The user a new session is opened for: the caller's own name unless an admin names
/// another with `user=`.
///
/// # Errors
/// `PERMISSION_DENIED` when a non-admin names another user.
pub fn session_user(caller: &Caller, requested: &str) -> Result<String, Status> {
    if requested.is_empty() || requested == caller.name {
        return Ok(caller.name.clone());
    }
    if caller.admin {
        return Ok(requested.to_string());
    }
    Err(Status::permission_denied(format!(
        "user='{requested}' names another user; you are {} (only an admin may set user=)",
        caller.name
    )))
}

/// The caller is an admin.
///
/// # Errors
/// `PERMISSION_DENIED` saying what only an admin may do.
pub fn require_admin(caller: &Caller, what: &str) -> Result<(), Status> {
    if caller.admin {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "only an admin may {what}; you are {}",
        caller.name
    )))
}

/// The caller may read or delete the object `id`, made by a client of `owner` (`None`: the
/// head does not know whose client made it).
///
/// # Errors
/// `PERMISSION_DENIED` naming the owner; for an unknown owner, unless admin.
pub fn object_access(caller: &Caller, id: u64, owner: Option<&str>) -> Result<(), Status> {
    match owner {
        Some(o) if caller.owns(o) => Ok(()),
        _ if caller.admin => Ok(()),
        Some(o) => Err(Status::permission_denied(format!(
            "object {id:#x} belongs to user {o}; you are {}",
            caller.name
        ))),
        None => Err(Status::permission_denied(format!(
            "object {id:#x} was made by a client this head does not know the user of; only \
             an admin may use it"
        ))),
    }
}

/// The node a Backend call comes from.
///
/// # Errors
/// `PERMISSION_DENIED` for a user principal.
pub fn backend_node(principal: &Principal) -> Result<&str, Status> {
    match principal {
        Principal::Node { name } => Ok(name),
        Principal::User { name, .. } => Err(Status::permission_denied(format!(
            "the Backend is for nodes and executors; user {name} cannot use it"
        ))),
    }
}

/// A node registers under its own name.
///
/// # Errors
/// `PERMISSION_DENIED` naming both names.
pub fn node_register(node: &str, registered: &str) -> Result<(), Status> {
    if node == registered {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "node {node} tried to register as '{registered}'; a node registers only under the \
         name of its certificate or token"
    )))
}

/// An executor stream of `node` binds executor `id`, which the head placed on `placed_on`
/// (`None`: no such executor).
///
/// # Errors
/// `PERMISSION_DENIED` for an executor of another node. An unknown id passes: the actor
/// refuses it with its own message.
pub fn executor_bind(node: &str, id: u64, placed_on: Option<&str>) -> Result<(), Status> {
    match placed_on {
        Some(n) if n != node => Err(Status::permission_denied(format!(
            "executor {id} was placed on node {n}; node {node} cannot bind it"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn user(name: &str, admin: bool) -> Caller {
        Caller {
            name: name.into(),
            admin,
        }
    }

    fn denied(r: Result<impl std::fmt::Debug, Status>) -> String {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        s.message().to_string()
    }

    #[test]
    fn a_user_reaches_its_own_sessions_and_an_admin_all() {
        let s = SessionId(7);
        assert!(session_access(&user("alice", false), s, "alice").is_ok());
        assert!(session_access(&user("root", true), s, "alice").is_ok());
        let msg = denied(session_access(&user("bob", false), s, "alice"));
        assert_eq!(msg, "session 7 belongs to user alice; you are bob");
    }

    #[test]
    fn only_an_admin_names_another_user() {
        assert_eq!(session_user(&user("alice", false), "").unwrap(), "alice");
        assert_eq!(
            session_user(&user("alice", false), "alice").unwrap(),
            "alice"
        );
        assert_eq!(session_user(&user("root", true), "bob").unwrap(), "bob");
        let msg = denied(session_user(&user("alice", false), "bob"));
        assert!(
            msg.contains("user='bob' names another user; you are alice"),
            "{msg}"
        );
        assert!(denied(require_admin(&user("bob", false), "drain a node")).contains("admin"));
        assert!(require_admin(&user("root", true), "drain a node").is_ok());
    }

    #[test]
    fn a_node_acts_on_the_frontend_only_for_its_executors_sessions() {
        let node = Principal::Node { name: "n1".into() };
        assert!(denied(frontend_caller(&node, None)).contains("only the Backend"));
        let elsewhere = ExecutorPlace {
            node: "n2".into(),
            user: Some("alice".into()),
        };
        assert!(denied(frontend_caller(&node, Some((3, Some(elsewhere))))).contains("n1"));
        assert!(denied(frontend_caller(&node, Some((3, None)))).contains("does not run"));
        let idle = ExecutorPlace {
            node: "n1".into(),
            user: None,
        };
        assert!(denied(frontend_caller(&node, Some((3, Some(idle))))).contains("no session"));
        let bound = ExecutorPlace {
            node: "n1".into(),
            user: Some("alice".into()),
        };
        let caller = frontend_caller(&node, Some((3, Some(bound)))).unwrap();
        assert_eq!(caller, user("alice", false));
        let alice = Principal::User {
            name: "alice".into(),
            admin: false,
        };
        assert_eq!(frontend_caller(&alice, None).unwrap(), user("alice", false));
    }

    #[test]
    fn objects_belong_to_their_clients_user() {
        assert!(object_access(&user("alice", false), 1, Some("alice")).is_ok());
        assert!(object_access(&user("root", true), 1, None).is_ok());
        assert!(denied(object_access(&user("bob", false), 1, Some("alice"))).contains("alice"));
        assert!(denied(object_access(&user("bob", false), 1, None)).contains("admin"));
    }

    #[test]
    fn the_backend_is_for_nodes_under_their_own_names() {
        let alice = Principal::User {
            name: "alice".into(),
            admin: true,
        };
        assert!(denied(backend_node(&alice)).contains("Backend"));
        let node = Principal::Node { name: "n1".into() };
        assert_eq!(backend_node(&node).unwrap(), "n1");
        assert!(node_register("n1", "n1").is_ok());
        assert!(denied(node_register("n1", "n2")).contains("'n2'"));
        assert!(executor_bind("n1", 4, Some("n1")).is_ok());
        assert!(executor_bind("n1", 4, None).is_ok());
        assert!(denied(executor_bind("n1", 4, Some("n2"))).contains("placed on node n2"));
    }
}
