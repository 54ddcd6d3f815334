//! The state check on every Frontend call: a client that said hello to a head remembers the
//! head's state identity and sends it with each later request (metadata
//! [`STATE_ID_HEADER`]). A head serving another state — it restarted on a deleted or fresh
//! state dir, where ids start again at 1 — answers DATA_LOSS instead of acting on ids that
//! now name someone else's sessions, tasks or objects. Requests without the header (the
//! hello itself, the CLI, tools, executors' object calls) are not checked.

use std::sync::Arc;

use tonic::{Request, Status};

use flame_core::client::STATE_ID_HEADER;
use flame_core::FlameError;

/// The interceptor for the Frontend service of a head whose state is `ours`.
pub fn interceptor(
    ours: Arc<str>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(theirs) = req.metadata().get(STATE_ID_HEADER) else {
            return Ok(req);
        };
        match theirs.to_str() {
            Ok(t) if t == &*ours => Ok(req),
            t => Err(FlameError::ClusterStateLost(format!(
                "the client started on state {} but this daemon serves state {ours}: its \
                 state dir was deleted or replaced (a restart on a fresh state), so the \
                 sessions, tasks and objects of the old state are gone",
                t.unwrap_or("(unreadable)")
            ))
            .into()),
        }
    }
}
