//! The storage thread: owns the `Storage` and applies writes with group commit.
//!
//! Callers queue jobs without waiting. The thread takes everything queued at once, applies all
//! consecutive writes in ONE transaction, and only then runs their `then` callbacks — so a
//! completion is sent to a client only after it is durable, and the cost of a commit is shared
//! by every task in the batch. Reads run in order with the writes (read-your-writes).
//!
//! A commit that fails (a full disk, an I/O error) is never dropped: its ops and callbacks are
//! kept and the commit is retried with backoff until it succeeds. Until then
//! [`StorageWriter::failure`] says what fails, so the session manager can refuse new work, and
//! later jobs (reads included) wait in the queue behind the unstored writes. Only when every
//! handle is gone (the daemon is stopping) does the thread give up, after
//! [`GIVE_UP_AFTER`]: the callbacks then get the error, and nothing unstored is reported done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flame_core::storage::{Storage, WriteOp};
use flame_core::{FlameError, Result};

type Then = Box<dyn FnOnce(Result<()>) + Send>;
type Read = Box<dyn FnOnce(&mut dyn Storage) + Send>;

enum Job {
    Write(Vec<WriteOp>, Option<Then>),
    Read(Read),
}

/// Most jobs folded into one transaction.
const MAX_JOBS_PER_COMMIT: usize = 4096;
/// A transaction is committed once it holds this many ops, so that a backlog (storage
/// behind a burst of completions) is written, and its memory freed, in bounded steps.
const MAX_OPS_PER_COMMIT: usize = 16_384;
/// First wait before a failed commit is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Once nobody can queue more (the daemon is stopping), how long a failing commit is still
/// retried before its writes are given up (their tasks run again after a restart).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// Whether commits currently fail, and why; written by the storage thread, read by anyone.
#[derive(Default)]
struct Health {
    failing: AtomicBool,
    cause: Mutex<String>,
}

/// Handle to the storage thread; cheap to clone. The thread stops when every handle is gone.
#[derive(Clone)]
pub struct StorageWriter {
    tx: mpsc::Sender<Job>,
    health: Arc<Health>,
}

impl StorageWriter {
    /// Start the storage thread; `commit_seconds`, if given, times every group commit.
    pub fn start(
        storage: Box<dyn Storage>,
        commit_seconds: Option<metrics::Histogram>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let timer = commit_seconds.unwrap_or_else(metrics::Histogram::noop);
        let health = Arc::new(Health::default());
        let thread = Committer {
            storage,
            timer,
            health: health.clone(),
            ops: Vec::new(),
            queued: 0,
            thens: Vec::new(),
            gave_up: false,
        };
        let handle = std::thread::Builder::new()
            .name("flame-storage".into())
            .spawn(move || thread.run(rx))
            .expect("spawning the storage thread");
        (Self { tx, health }, handle)
    }

    /// Why commits fail right now (the state file and the cause), or `None` when they work.
    /// A relaxed atomic load when healthy: cheap enough to ask for every request.
    pub fn failure(&self) -> Option<String> {
        if !self.health.failing.load(Ordering::Acquire) {
            return None;
        }
        let cause = self
            .health
            .cause
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        Some(cause)
    }

    /// Queue writes; `then` runs on the storage thread once they are committed (or, only
    /// when the daemon stops with storage still failing, given up).
    pub fn write(&self, ops: Vec<WriteOp>, then: impl FnOnce(Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError(Job::Write(_, Some(then)))) =
            self.tx.send(Job::Write(ops, Some(Box::new(then))))
        {
            then(Err(FlameError::Storage(
                "the storage thread has stopped".into(),
            )));
        }
    }

    /// Queue writes nobody waits for.
    pub fn write_only(&self, ops: Vec<WriteOp>) {
        let _ = self.tx.send(Job::Write(ops, None));
    }

    /// Run `f` against the storage after everything queued before it.
    pub fn read(&self, f: impl FnOnce(&mut dyn Storage) + Send + 'static) {
        let _ = self.tx.send(Job::Read(Box::new(f)));
    }

    /// Wait until everything queued so far is committed.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(Vec::new(), move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| FlameError::Storage("the storage thread has stopped".into()))?
    }
}

/// The storage thread's state: the batch being assembled and what waits for it.
struct Committer {
    storage: Box<dyn Storage>,
    timer: metrics::Histogram,
    health: Arc<Health>,
    /// The jobs' own vectors, not one concatenation: no copy, and each is freed on commit.
    ops: Vec<Vec<WriteOp>>,
    queued: usize,
    thens: Vec<Then>,
    /// Storage failed through the stop: later batches get one attempt each, no retries.
    gave_up: bool,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_JOBS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            for job in jobs {
                match job {
                    Job::Write(o, then) => {
                        self.queued += o.len();
                        if !o.is_empty() {
                            self.ops.push(o);
                        }
                        self.thens.extend(then);
                        if self.queued >= MAX_OPS_PER_COMMIT {
                            self.commit();
                        }
                    }
                    Job::Read(f) => {
                        self.commit();
                        f(self.storage.as_mut());
                    }
                }
            }
            self.commit();
        }
        self.commit();
    }

    /// Commit the batch, retrying until it is stored; then run the callbacks.
    fn commit(&mut self) {
        self.queued = 0;
        if self.ops.is_empty() && self.thens.is_empty() {
            return;
        }
        let mut backoff = FIRST_BACKOFF;
        // Set once every handle is gone: from then on the retries are bounded.
        let mut stopping_since: Option<Instant> = None;
        let result = loop {
            let r = self.try_commit();
            let Err(e) = r else { break Ok(()) };
            let count: usize = self.ops.iter().map(Vec::len).sum();
            let cause = format!("{}: {e}", self.storage.location());
            if !self.health.failing.swap(true, Ordering::AcqRel) {
                tracing::error!(error = %cause, ops = count, "storage commit failed; keeping the writes and retrying (new work is refused meanwhile)");
            }
            if let Ok(mut c) = self.health.cause.lock() {
                *c = cause.clone();
            }
            // Only this thread's own reference left: no handle can queue or wait any more.
            if Arc::strong_count(&self.health) == 1 || self.gave_up {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if self.gave_up || since.elapsed() >= GIVE_UP_AFTER {
                    tracing::error!(error = %cause, ops = count, "stopping with storage still failing: these writes are lost; their tasks run again after a restart");
                    self.gave_up = true;
                    break Err(FlameError::Storage(cause));
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        if result.is_ok() && self.health.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("storage commits work again; accepting new work");
        }
        self.ops.clear();
        for then in self.thens.drain(..) {
            then(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(FlameError::Storage(e.to_string())),
            });
        }
    }

    fn try_commit(&mut self) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let r = self.storage.apply_all(&self.ops);
        self.timer.record(started.elapsed().as_secs_f64());
        r
    }
}

#[cfg(test)]
mod tests;
