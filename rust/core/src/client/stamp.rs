//! [`StateStamp`]: what makes every call of a client name the state it started with. The
//! client keeps the head's state identity from its first hello and sends it with every later
//! request; a head that restarted on another state (a deleted or fresh state dir, where ids
//! start again at 1) refuses the call with DATA_LOSS rather than act on ids that now belong
//! to someone else. See `rpc/state_check.rs` in the daemon for the other side.
//!
//! The same interceptor carries the caller's credentials (#11): `authorization: Bearer
//! <token>` on every call and stream, and, inside an executor process, the executor's id
//! (a node credential acts only for the executors of its node).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::proto::frontend_client::FrontendClient;

/// Metadata key carrying the state identity the client started with.
pub const STATE_ID_HEADER: &str = "flame-state-id";

/// The Frontend stub every client call goes through.
pub type Frontend = FrontendClient<InterceptedService<Channel, StateStamp>>;

/// Adds [`STATE_ID_HEADER`] to each request; an empty stamp adds nothing (a caller that
/// never said hello, or a head too old to have an identity). With a bearer it adds the
/// `authorization` header too. Inside an executor process every call also names the
/// executor ([`super::EXECUTOR_ID_HEADER`]).
#[derive(Clone, Debug, Default)]
pub struct StateStamp {
    value: Option<MetadataValue<Ascii>>,
    bearer: Option<MetadataValue<Ascii>>,
}

impl StateStamp {
    /// The stamp for the state `id` (from a hello); empty when `id` is empty or not ASCII.
    pub fn new(id: &str) -> StateStamp {
        StateStamp {
            value: (!id.is_empty()).then(|| id.parse().ok()).flatten(),
            bearer: None,
        }
    }

    /// This stamp, also sending `bearer` (the whole `Bearer <token>` value) on every call.
    pub fn with_bearer(mut self, bearer: Option<MetadataValue<Ascii>>) -> StateStamp {
        self.bearer = bearer;
        self
    }
}

impl Interceptor for StateStamp {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert(STATE_ID_HEADER, v.clone());
        }
        if let Some(b) = &self.bearer {
            req.metadata_mut()
                .insert(crate::auth::AUTHORIZATION_HEADER, b.clone());
        }
        if let Some(id) = crate::executor::process_executor() {
            req.metadata_mut()
                .insert(super::EXECUTOR_ID_HEADER, id.0.into());
        }
        Ok(req)
    }
}

/// A stamped Frontend stub on `channel`, with the client's message limits.
pub fn stub(channel: Channel, stamp: StateStamp) -> Frontend {
    FrontendClient::with_interceptor(channel, stamp)
        .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(super::MAX_MESSAGE_BYTES)
}
