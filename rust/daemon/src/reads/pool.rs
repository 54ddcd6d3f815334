//! [`ReadPool`]: a few read-only connections to the state (SQLite or PostgreSQL), used from tokio's blocking pool, with a
//! bound on the reads in flight.
//!
//! A read holds a connection on a blocking thread, never a tokio worker, the actor or the
//! storage writer. Two semaphores bound the work: `running` (one permit per connection) says
//! how many reads run at once, `admitted` how many may wait or run in all; a read beyond that
//! is refused at once with `Busy` (HTTP 503, gRPC RESOURCE_EXHAUSTED) rather than queued
//! without end, and one that waits longer than [`MAX_WAIT`] for a connection gives up the
//! same way. A caller that goes away mid-read leaves the blocking job to finish with its
//! permit, so abandoned reads still count against the bound.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use flame_core::storage::{StateLocation, StateReader};
use flame_core::{FlameError, Result};

/// Reads admitted at once (waiting for a connection or running); more are refused at once.
pub const MAX_ADMITTED: usize = 512;
/// Longest a read waits for a free connection before it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Read-only connections to the state file and the bounds on their use.
pub struct ReadPool {
    idle: Mutex<Vec<Box<dyn StateReader>>>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
}

/// A read's place among those admitted; the read ends when it is dropped.
pub struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl ReadPool {
    /// Open `readers` (at least 1) read-only connections to the state at `state`.
    ///
    /// # Errors
    /// `FlameError::Storage` naming the state when a connection cannot be opened.
    pub fn open(state: &StateLocation, readers: usize) -> Result<Self> {
        let readers = readers.max(1);
        let idle = (0..readers)
            .map(|_| state.reader())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            idle: Mutex::new(idle),
            running: Arc::new(Semaphore::new(readers)),
            admitted: Arc::new(Semaphore::new(MAX_ADMITTED)),
        })
    }

    /// Take a place for one read, or refuse it at once when [`MAX_ADMITTED`] are in flight.
    ///
    /// # Errors
    /// `FlameError::Busy` when the pool is full.
    pub fn admit(&self) -> Result<Admitted> {
        self.admitted
            .clone()
            .try_acquire_owned()
            .map(Admitted)
            .map_err(|_| {
                FlameError::Busy(format!(
                    "{MAX_ADMITTED} introspection reads are in flight; retry shortly"
                ))
            })
    }

    /// Run `f` on a free connection on a blocking thread.
    ///
    /// # Errors
    /// `FlameError::Busy` when no connection frees up within [`MAX_WAIT`]; otherwise what
    /// `f` returns.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn StateReader) -> Result<T> + Send + 'static,
    {
        let permit = tokio::time::timeout(MAX_WAIT, self.running.clone().acquire_owned())
            .await
            .map_err(|_| {
                FlameError::Busy(format!(
                    "no database reader became free within {MAX_WAIT:?}; retry shortly"
                ))
            })?
            .map_err(|_| FlameError::ShuttingDown)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            // The permit guarantees a connection is idle; it is released after the return.
            let _permit = permit;
            let mut reader = pool.take();
            // A panicking read must not take its connection with it.
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(reader.as_mut())));
            pool.give_back(reader);
            out.unwrap_or_else(|_| Err(FlameError::Internal("a database read panicked".into())))
        })
        .await
        .map_err(|e| FlameError::Internal(format!("a database read failed: {e}")))?
    }

    fn take(&self) -> Box<dyn StateReader> {
        // A poisoned lock only means another read panicked; the Vec is still whole.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.pop()
            .expect("a running permit is held only with an idle connection")
    }

    fn give_back(&self, reader: Box<dyn StateReader>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(reader);
    }
}
