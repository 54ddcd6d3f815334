//! New work is refused while storage fails.
//!
//! The storage writer keeps a failing commit and retries it until it succeeds (see
//! `crate::storage_writer`); meanwhile the daemon finishes what it accepted, holding the
//! unstored results in memory, but takes on nothing new: no new client, application,
//! session or task. Each refusal is RESOURCE_EXHAUSTED and names the state file and the cause.

use flame_core::FlameError;

use super::actor::Actor;

impl Actor {
    /// Why new work is refused right now, if it is.
    pub(super) fn refusal(&self) -> Option<FlameError> {
        self.store.failure().map(|cause| {
            FlameError::StorageUnavailable(format!(
                "the daemon refuses new work until it can store it again \
                 (it retries by itself): {cause}"
            ))
        })
    }
}
