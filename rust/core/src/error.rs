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
    /// The daemon cannot store its state (say its disk is full) and refuses new work until
    /// it can; the message names the state file and the cause. RESOURCE_EXHAUSTED.
    #[error("{STORAGE_UNAVAILABLE}: {0}")]
    StorageUnavailable(String),
}

/// How a `StorageUnavailable` message starts, so that the client tells it apart from a
/// payload over the limit (both are RESOURCE_EXHAUSTED on the wire).
pub const STORAGE_UNAVAILABLE: &str = "storage unavailable";

impl From<rusqlite::Error> for FlameError {
    fn from(e: rusqlite::Error) -> Self {
        FlameError::Storage(e.to_string())
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
            FlameError::Storage(_) | FlameError::Internal(_) => Code::Internal,
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
            Code::ResourceExhausted => match msg.strip_prefix(STORAGE_UNAVAILABLE) {
                Some(rest) => {
                    FlameError::StorageUnavailable(rest.trim_start_matches(": ").to_string())
                }
                None => FlameError::PayloadTooLarge(msg),
            },
            Code::FailedPrecondition => FlameError::FailedPrecondition(msg),
            Code::Unavailable => FlameError::ConnectionLost(msg),
            Code::DeadlineExceeded => FlameError::Timeout(msg),
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
