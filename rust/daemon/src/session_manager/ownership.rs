//! Who may use a session's task stream: the client that opened it. A session records its
//! owner (the client id of the stream's hello); a submit or watch on an owned session from a
//! stream of another client is refused with a clear error and never gets results. Sessions
//! without an owner (0: opened by the CLI or a tool) are open to any stream.

use flame_core::ids::SessionId;
use flame_core::model::{ErrorKind, TaskFailure};

use super::actor::Actor;

impl Actor {
    /// The client id the stream `conn` announced (0: none).
    pub(super) fn stream_client(&self, conn: u64) -> u32 {
        self.conn_client.get(&conn).copied().unwrap_or(0)
    }

    /// Why the stream `conn` may not submit to or watch `session`, if it may not. Only open
    /// sessions are known here; a closed one is checked against storage by the caller.
    pub(super) fn not_owner(&self, conn: u64, session: SessionId) -> Option<TaskFailure> {
        let owner = self.sched.session(session)?.spec.owner;
        refusal(session, owner, self.stream_client(conn))
    }
}

/// The failure for a stream of `client` using `session` owned by `owner`; `None` if allowed.
pub(super) fn refusal(session: SessionId, owner: u32, client: u32) -> Option<TaskFailure> {
    if owner == 0 || owner == client {
        return None;
    }
    let who = match client {
        0 => "a stream without a client id".to_string(),
        c => format!("client {c}"),
    };
    Some(TaskFailure::new(
        ErrorKind::ErrorSessionNotFound,
        format!(
            "session {session} belongs to client {owner}; {who} cannot submit to it or \
             watch its tasks (only the client that opened a session uses it)"
        ),
    ))
}

impl Actor {
    /// The node an executor runs on and the user of the session it serves (#11: a node's
    /// Frontend call with an executor's header acts for that user). An idle executor acts
    /// for the user of the session it last served (#12): its process still holds that
    /// user's objects (refs a finished task returned) and must be able to delete them.
    pub(super) fn executor_place(
        &self,
        id: flame_core::ids::ExecutorId,
    ) -> Option<crate::security::authz::ExecutorPlace> {
        let e = self.sched.executor(id)?;
        let node = self.sched.nodes().find(|n| n.id == e.node)?.name.clone();
        let user = e
            .session()
            .or(e.last_session)
            .and_then(|s| self.sched.session(s))
            .map(|s| s.spec.user.clone());
        Some(crate::security::authz::ExecutorPlace { node, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_or_anyone_for_an_ownerless_session() {
        let s = SessionId(3);
        assert!(refusal(s, 0, 9).is_none());
        assert!(refusal(s, 7, 7).is_none());
        let f = refusal(s, 7, 9).unwrap();
        assert!(f.message.contains("belongs to client 7"), "{}", f.message);
        assert!(f.message.contains("client 9"), "{}", f.message);
        assert!(refusal(s, 7, 0)
            .unwrap()
            .message
            .contains("without a client id"));
    }
}
