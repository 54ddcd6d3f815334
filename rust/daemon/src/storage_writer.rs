//! The storage thread: owns the `Storage` and applies writes with group commit.
//!
//! Callers queue jobs without waiting. The thread takes everything queued at once, applies all
//! consecutive writes in ONE transaction, and only then runs their `then` callbacks — so a
//! completion is sent to a client only after it is durable, and the cost of a commit is shared
//! by every task in the batch. Reads run in order with the writes (read-your-writes).

use std::sync::mpsc;
use std::thread::JoinHandle;

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

/// Handle to the storage thread; cheap to clone. The thread stops when every handle is gone.
#[derive(Clone)]
pub struct StorageWriter {
    tx: mpsc::Sender<Job>,
}

impl StorageWriter {
    /// Start the storage thread.
    /// Start the storage thread; `commit_seconds`, if given, times every group commit.
    pub fn start(
        storage: Box<dyn Storage>,
        commit_seconds: Option<metrics::Histogram>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let timer = commit_seconds.unwrap_or_else(metrics::Histogram::noop);
        let handle = std::thread::Builder::new()
            .name("flame-storage".into())
            .spawn(move || run(storage, rx, timer))
            .expect("spawning the storage thread");
        (Self { tx }, handle)
    }

    /// Queue writes; `then` runs on the storage thread once they are committed (or failed).
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

fn run(mut storage: Box<dyn Storage>, rx: mpsc::Receiver<Job>, timer: metrics::Histogram) {
    // The jobs' own vectors, not one concatenation: no copy, and each is freed on commit.
    let mut ops: Vec<Vec<WriteOp>> = Vec::new();
    let mut queued = 0;
    let mut thens: Vec<Then> = Vec::new();
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
                    queued += o.len();
                    if !o.is_empty() {
                        ops.push(o);
                    }
                    thens.extend(then);
                    if queued >= MAX_OPS_PER_COMMIT {
                        commit(storage.as_mut(), &mut ops, &mut thens, &timer);
                        queued = 0;
                    }
                }
                Job::Read(f) => {
                    commit(storage.as_mut(), &mut ops, &mut thens, &timer);
                    queued = 0;
                    f(storage.as_mut());
                }
            }
        }
        commit(storage.as_mut(), &mut ops, &mut thens, &timer);
        queued = 0;
    }
    commit(storage.as_mut(), &mut ops, &mut thens, &timer);
}

fn commit(
    storage: &mut dyn Storage,
    ops: &mut Vec<Vec<WriteOp>>,
    thens: &mut Vec<Then>,
    timer: &metrics::Histogram,
) {
    if ops.is_empty() && thens.is_empty() {
        return;
    }
    let result = if ops.is_empty() {
        Ok(())
    } else {
        let started = std::time::Instant::now();
        let r = storage.apply_all(ops);
        timer.record(started.elapsed().as_secs_f64());
        r
    };
    if let Err(e) = &result {
        let count: usize = ops.iter().map(Vec::len).sum();
        tracing::error!(error = %e, ops = count, "storage commit failed");
    }
    ops.clear();
    for then in thens.drain(..) {
        then(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(FlameError::Storage(e.to_string())),
        });
    }
}
