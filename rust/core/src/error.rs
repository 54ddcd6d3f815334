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
    #[error("the Flame daemon is busy: {0}")]
    Busy(String),
}

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
            FlameError::PayloadTooLarge(_) => Code::ResourceExhausted,
            FlameError::Unreachable { .. } | FlameError::ConnectionLost(_) => Code::Unavailable,
            FlameError::ShuttingDown => Code::Unavailable,
            FlameError::Timeout(_) => Code::DeadlineExceeded,
            FlameError::Storage(_) | FlameError::Internal(_) | FlameError::StateFileUnusable(_) => {
                Code::Internal
            }
            FlameError::ClusterStateLost(_) => Code::DataLoss,
            FlameError::AlreadyExists(_) => Code::AlreadyExists,
            FlameError::Busy(_) => Code::ResourceExhausted,
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
            Code::InvalidArgument => FlameError::InvalidArgument(msg),
            Code::ResourceExhausted => FlameError::PayloadTooLarge(msg),
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
