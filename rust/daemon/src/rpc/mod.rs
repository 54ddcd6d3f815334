//! gRPC services of the session manager: [`frontend`] for clients (its object directory
//! calls in [`directory`]), [`backend`] for nodes and executors. Handlers validate what came over the wire, turn it into an
//! [`Event`](crate::session_manager::Event) and hand it to the actor; they own no state.

pub mod access;
pub mod admin;
pub mod authorize;
pub mod backend;
pub mod directory;
pub mod frontend;
mod heartbeat;
pub mod state_check;

use std::time::Duration;

use tonic::{Status, Streaming};

/// How long a new stream may take to send its first (registering) message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first message of a stream, which must come promptly.
async fn first_message<T>(stream: &mut Streaming<T>, what: &str) -> Result<T, Status> {
    match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(Status::invalid_argument(format!(
            "{what} stream closed before its register message"
        ))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what} stream sent no register message within {FIRST_MESSAGE_TIMEOUT:?}"
        ))),
    }
}

/// Tell the peer why its stream ends when one of its messages could not be read — unless
/// the actor already let go of the stream (`errors` is weak so it does not keep it open).
fn report_unreadable<T>(
    errors: &tokio::sync::mpsc::WeakUnboundedSender<Result<T, Status>>,
    what: &str,
    e: &Status,
) {
    if let Some(errors) = errors.upgrade() {
        let _ = errors.send(Err(Status::invalid_argument(format!(
            "the {what} stream ended: a message could not be read: {}",
            e.message()
        ))));
    }
}
