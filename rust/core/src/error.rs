//! The one error type of the core layer, and its mapping to gRPC status codes.

use crate::ids::SessionId;

/// Result with [`FlameError`] as the default error.
pub type Result<T, E = FlameError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum FlameError {
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    #[error("session {0} is closed")]
    SessionClosed(SessionId),
    #[error("application '{0}' is not registered")]
    ApplicationNotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The daemon answered NOT_FOUND (unknown session, task or application).
    #[error("{0}")]
    NotFound(String),
    /// The daemon answered FAILED_PRECONDITION (e.g. the session is closed).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("cannot reach the Flame daemon at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("connection to the Flame daemon lost: {0}")]
    ConnectionLost(String),
    #[error("the Flame daemon is shutting down")]
    ShuttingDown,
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The daemon's state is not the one this client started with: it was deleted or
    /// replaced (a restart on a fresh state dir). Nothing of the old state can be reached.
    #[error("cluster state lost: {0}")]
    ClusterStateLost(String),
    /// Something that can be written only once (an object id) is already stored.
    #[error("{0}")]
    AlreadyExists(String),
    /// The state database file is unusable: damaged, or deleted or replaced under the
    /// running daemon. The daemon must stop; retrying cannot help.
    #[error("{0}")]
    StateFileUnusable(String),
    /// Too much is asked at once (e.g. introspection reads in flight); retry shortly.
    #[error("{BUSY}: {0}")]
    Busy(String),
    /// The daemon cannot store its state (say its disk is full) and refuses new work until
    /// it can; the message names the state file and the cause. RESOURCE_EXHAUSTED.
    #[error("{STORAGE_UNAVAILABLE}: {0}")]
    StorageUnavailable(String),
    /// No credentials, or credentials the daemon does not accept (wrong, expired, revoked);
    /// the message says which. UNAUTHENTICATED.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed to do this; the message names what was missing.
    /// PERMISSION_DENIED.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
}

/// How a `StorageUnavailable` message starts, so that the client tells it apart from a
/// payload over the limit (both are RESOURCE_EXHAUSTED on the wire).
pub const STORAGE_UNAVAILABLE: &str = "storage unavailable";

/// How a `Busy` message starts, for the same reason.
pub const BUSY: &str = "the Flame daemon is busy";

impl From<rusqlite::Error> for FlameError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            // Kept apart so the storage layer can name the file and say what to do.
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                FlameError::StateFileUnusable(e.to_string())
            }
            _ => FlameError::Storage(e.to_string()),
        }
    }
}

impl From<FlameError> for tonic::Status {
    fn from(e: FlameError) -> Self {
        use tonic::Code;
        let code = match &e {
            FlameError::SessionNotFound(_)
            | FlameError::ApplicationNotFound(_)
            | FlameError::NotFound(_) => Code::NotFound,
            FlameError::SessionClosed(_) | FlameError::FailedPrecondition(_) => {
                Code::FailedPrecondition
            }
            FlameError::InvalidArgument(_) => Code::InvalidArgument,
            FlameError::PayloadTooLarge(_) | FlameError::StorageUnavailable(_) => {
                Code::ResourceExhausted
            }
            FlameError::Unreachable { .. } | FlameError::ConnectionLost(_) => Code::Unavailable,
            FlameError::ShuttingDown => Code::Unavailable,
            FlameError::Timeout(_) => Code::DeadlineExceeded,
            FlameError::Storage(_) | FlameError::Internal(_) | FlameError::StateFileUnusable(_) => {
                Code::Internal
            }
            FlameError::ClusterStateLost(_) => Code::DataLoss,
            FlameError::AlreadyExists(_) => Code::AlreadyExists,
            FlameError::Busy(_) => Code::ResourceExhausted,
            FlameError::Unauthenticated(_) => Code::Unauthenticated,
            FlameError::PermissionDenied(_) => Code::PermissionDenied,
        };
        tonic::Status::new(code, e.to_string())
    }
}

impl From<tonic::Status> for FlameError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::NotFound => FlameError::NotFound(msg),
            // A status made from a FlameError carries its Display, prefix included: keep the
            // prefix once when it crosses several hops (client -> node -> head).
            Code::InvalidArgument => FlameError::InvalidArgument(
                msg.strip_prefix("invalid argument: ")
                    .unwrap_or(&msg)
                    .to_string(),
            ),
            Code::ResourceExhausted => match msg.strip_prefix(STORAGE_UNAVAILABLE) {
                Some(rest) => {
                    FlameError::StorageUnavailable(rest.trim_start_matches(": ").to_string())
                }
                None => match msg.strip_prefix(BUSY) {
                    Some(rest) => FlameError::Busy(rest.trim_start_matches(": ").to_string()),
                    None => FlameError::PayloadTooLarge(msg),
                },
            },
            Code::FailedPrecondition => FlameError::FailedPrecondition(msg),
            Code::Unavailable => FlameError::ConnectionLost(msg),
            Code::DeadlineExceeded => FlameError::Timeout(msg),
            // The message already reads "cluster state lost: ..."; keep it once.
            Code::DataLoss => FlameError::ClusterStateLost(
                msg.strip_prefix("cluster state lost: ")
                    .unwrap_or(&msg)
                    .to_string(),
            ),
            Code::AlreadyExists => FlameError::AlreadyExists(msg),
            Code::Unauthenticated => FlameError::Unauthenticated(
                msg.strip_prefix("not authenticated: ")
                    .unwrap_or(&msg)
                    .to_string(),
            ),
            Code::PermissionDenied => FlameError::PermissionDenied(
                msg.strip_prefix("permission denied: ")
                    .unwrap_or(&msg)
                    .to_string(),
            ),
            _ => FlameError::Internal(format!("{:?}: {msg}", s.code())),
        }
    }
}

/// An error with its whole cause chain: tonic's transport errors say only "transport error"
/// at the top; what went wrong (connection refused, ...) is further down.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::FlameError;

    /// Three errors share RESOURCE_EXHAUSTED on the wire; the client must tell them apart.
    #[test]
    fn resource_exhausted_errors_survive_the_wire() {
        let cases = [
            FlameError::Busy("512 reads in flight".into()),
            FlameError::StorageUnavailable("state file x: disk full".into()),
            FlameError::PayloadTooLarge("input of 9 bytes".into()),
        ];
        for e in cases {
            let text = e.to_string();
            let kind = std::mem::discriminant(&e);
            let back = FlameError::from(tonic::Status::from(e));
            assert!(back.to_string().ends_with(&text), "{back} / {text}");
            assert_eq!(std::mem::discriminant(&back), kind, "{text}");
        }
    }
}
