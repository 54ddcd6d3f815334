//! Sessions opened from inside an executor (a task calling services): the CreateSession
//! request says, in a header, which executor's process opened it, so that the session
//! manager closes the session when that process ends. A task normally closes the sessions
//! it opened when it ends (the Python worker does); a task killed by cancel or timeout
//! cannot, and its sessions would otherwise run on until its client lease ran out.

use tonic::Request;

use crate::ids::ExecutorId;
use crate::proto;

/// Metadata key carrying the id of the executor whose process opens a session.
pub const EXECUTOR_ID_HEADER: &str = "flame-executor-id";

/// A CreateSession request, marked with this process's executor id when it runs one.
pub fn create_session_request(
    req: proto::CreateSessionRequest,
) -> Request<proto::CreateSessionRequest> {
    let mut req = Request::new(req);
    if let Some(id) = crate::executor::process_executor() {
        req.metadata_mut().insert(EXECUTOR_ID_HEADER, id.0.into());
    }
    req
}

/// The executor whose process sent `req`, if it says so (the daemon's side).
pub fn opened_by_executor<T>(req: &Request<T>) -> Option<ExecutorId> {
    req.metadata()
        .get(EXECUTOR_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|id| *id != 0)
        .map(ExecutorId)
}
