//! Retention: a closed session's tasks, results and logs are deleted once it has been closed
//! for `result_retention`, and their space is given back (see `WriteOp::PruneClosed`).
//!
//! The actor asks storage to prune on a timer, a few times per retention period (at most
//! once a minute), so a session is deleted at most that much after its time is up. Open
//! sessions are never touched: the op selects by the stored `closed` state.

use std::time::{Duration, Instant};

use flame_core::model::now_ms;
use flame_core::storage::WriteOp;

use super::actor::Actor;

/// Longest pause between two prunes.
const MAX_EVERY: Duration = Duration::from_secs(60);
/// Shortest pause between two prunes (a tiny retention must not make the actor spin).
const MIN_EVERY: Duration = Duration::from_millis(100);

/// When the next prune is due, and the pause between prunes.
pub(super) struct Retention {
    keep: Duration,
    every: Duration,
    pub next_at: Instant,
}

impl Retention {
    pub fn new(keep: Duration, now: Instant) -> Self {
        let every = (keep / 4).clamp(MIN_EVERY, MAX_EVERY);
        Self {
            keep,
            every,
            next_at: now + every,
        }
    }
}

impl Actor {
    /// Queue a prune of the sessions closed longer than the retention, when one is due.
    pub(super) fn check_retention(&mut self, now: Instant) {
        if now < self.retention.next_at {
            return;
        }
        self.retention.next_at = now + self.retention.every;
        // Nothing new is stored while storage fails; pruning would only add to the backlog.
        if self.store.failure().is_some() {
            return;
        }
        let keep_ms = i64::try_from(self.retention.keep.as_millis()).unwrap_or(i64::MAX);
        let closed_before_ms = now_ms().saturating_sub(keep_ms);
        self.store
            .write_only(vec![WriteOp::PruneClosed { closed_before_ms }]);
    }
}
