//! The node's executor children: the slot limit, spawn and kill by executor id, exit
//! bookkeeping, the memory limit, and the shutdown that reaps every one of them.
//!
//! A child counts against the slots until its exit report has been taken from [`Pool::next_exit`]
//! — the same moment the session manager hears of it — so both sides agree on what is free.
//!
//! The memory limit is enforced by whoever waits in [`Pool::next_exit`] (the node's loop, and
//! the shutdown sequence): one timer for the whole pool, not a task per child, and no lock —
//! the pool's owner is the only one that touches the children.

use std::collections::HashMap;
use std::time::Duration;

use flame_core::ids::ExecutorId;
use flame_core::proto::ExecutorExited;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::task::TaskTracker;

use super::process::{self, Executor};
use super::system::{resident_bytes, resolve_python};
use super::NodeConfig;

/// How long children get to exit by themselves first (the session manager tells them to stop
/// when it shuts down, and then they run on_session_leave), before any signal.
const SELF_EXIT: Duration = Duration::from_secs(1);
/// After SIGTERM, how long children get to exit on their own before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// After SIGKILL, how long to wait for the reports (only a process stuck in the kernel lasts).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often children's resident memory is checked against the limit. Reading
/// `/proc/<pid>/status` costs microseconds; a child allocating faster than this can overshoot
/// the limit briefly, which is why it is a kill and not a request.
const MEMORY_CHECK: Duration = Duration::from_millis(200);

pub(super) struct Pool {
    config: NodeConfig,
    children: HashMap<ExecutorId, Executor>,
    tracker: TaskTracker,
    exits_tx: mpsc::UnboundedSender<ExecutorExited>,
    exits: mpsc::UnboundedReceiver<ExecutorExited>,
    /// Ticks while there is a memory limit.
    memory_check: Option<Interval>,
}

impl Pool {
    pub(super) fn new(config: NodeConfig) -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let memory_check = config.executor_memory_bytes.map(|_| {
            let mut check = tokio::time::interval(MEMORY_CHECK);
            check.set_missed_tick_behavior(MissedTickBehavior::Delay);
            check
        });
        Pool {
            config,
            children: HashMap::new(),
            tracker: TaskTracker::new(),
            exits_tx,
            exits,
            memory_check,
        }
    }

    /// Starts executor `id`. `beyond_slots`: executors of this node the head counts as
    /// blocked in nested waits, which hold no slot meanwhile; the node may run that many more.
    ///
    /// # Errors
    /// An exit report to send at once when it cannot run: no free slot, or it failed to start.
    pub(super) fn spawn(
        &mut self,
        id: ExecutorId,
        python: &str,
        beyond_slots: u32,
    ) -> Result<(), ExecutorExited> {
        let refuse = |reason: String| ExecutorExited {
            executor_id: id.0,
            exit_code: -1,
            signal: 0,
            stderr_tail: reason,
        };
        if self.children.contains_key(&id) {
            // Reporting an exit here would make the session manager drop the live one.
            tracing::warn!(executor = %id, "spawn for an executor that is already running; ignored");
            return Ok(());
        }
        let allowed = self.config.slots as usize + beyond_slots as usize;
        if self.children.len() >= allowed {
            let reason = format!(
                "node '{}' refused executor {id}: all {} slots are in use ({beyond_slots} \
                 more allowed for executors blocked in nested waits)",
                self.config.name, self.config.slots
            );
            tracing::warn!("{reason}");
            return Err(refuse(reason));
        }
        let argv = self.command_line(id, python);
        let exits = self.exits_tx.clone();
        let child = process::spawn(
            id,
            &argv,
            &self.config.work_dir,
            &self.config.env,
            &self.tracker,
            exits,
        )
        .map_err(|reason| {
            tracing::warn!(executor = %id, "{reason}");
            refuse(reason)
        })?;
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILLs executor `id`; its exit is reported like any other.
    pub(super) fn kill(&mut self, id: ExecutorId, reason: &str) {
        match self.children.get(&id) {
            Some(child) => {
                tracing::info!(executor = %id, pid = child.pid, reason, "killing executor");
                child.signal(libc::SIGKILL);
            }
            // It may have just exited; its report is already on its way.
            None => tracing::debug!(executor = %id, "kill for an executor that is not running"),
        }
    }

    /// The next child exit; the child no longer counts against the slots. Meanwhile, kills
    /// children over the memory limit. Cancel-safe.
    pub(super) async fn next_exit(&mut self) -> ExecutorExited {
        loop {
            tokio::select! {
                // The pool holds a sender itself, so the channel never closes.
                report = self.exits.recv() => {
                    let report = report.unwrap_or_default();
                    self.children.remove(&ExecutorId(report.executor_id));
                    return report;
                }
                _ = tick(&mut self.memory_check) => self.enforce_memory_limit(),
            }
        }
    }

    /// SIGKILLs every child whose resident memory is over the limit, with a note that opens
    /// its exit report. Only the executor process itself is measured, not what it started.
    fn enforce_memory_limit(&mut self) {
        let Some(limit) = self.config.executor_memory_bytes else {
            return;
        };
        for (id, child) in &mut self.children {
            if child.noted() {
                continue;
            }
            // None: it is exiting (a zombie) or gone; its report is on its way.
            let Some(resident) = resident_bytes(child.pid) else {
                continue;
            };
            if resident > limit {
                let note = memory_note(limit, resident);
                tracing::warn!(executor = %id, pid = child.pid, "{note}");
                child.kill_with_note(note);
            }
        }
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.children.values().map(|c| c.pid).collect()
    }

    /// Stops every child: up to [`SELF_EXIT`] to exit by themselves, then SIGTERM, up to
    /// [`GRACE`] to exit, then SIGKILL; hands each exit
    /// report to `report`, and returns once every watcher task is done.
    pub(super) async fn shutdown(mut self, mut report: impl FnMut(ExecutorExited)) {
        if !self.children.is_empty() {
            tracing::info!(count = self.children.len(), "stopping executors");
        }
        let phases = [
            (None, SELF_EXIT),
            (Some(libc::SIGTERM), GRACE),
            (Some(libc::SIGKILL), KILL_WAIT),
        ];
        for (signal, wait) in phases {
            if let Some(signal) = signal {
                self.children.values().for_each(|c| c.signal(signal));
            }
            let deadline = Instant::now() + wait;
            while !self.children.is_empty() {
                match tokio::time::timeout_at(deadline, self.next_exit()).await {
                    Ok(exit) => report(exit),
                    Err(_) => break,
                }
            }
        }
        if !self.children.is_empty() {
            tracing::error!(pids = ?self.pids(), "executors did not die after SIGKILL");
        }
        self.tracker.close();
        // Watchers finish within PIPE_DRAIN of their child's exit; a bound anyway.
        if tokio::time::timeout(KILL_WAIT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("executor watchers did not finish");
        }
    }

    /// `{python} -m flame._executor --address A --executor-id N`, or the configured command.
    fn command_line(&self, id: ExecutorId, python: &str) -> Vec<String> {
        let mut argv = match &self.config.executor_command {
            Some(command) => command.clone(),
            None => vec![
                resolve_python(python, &self.config.python),
                "-m".into(),
                "flame._executor".into(),
            ],
        };
        argv.extend([
            "--address".into(),
            self.config.head.clone(),
            "--executor-id".into(),
            id.0.to_string(),
        ]);
        argv
    }
}

/// Waits for the next tick, or forever without a timer.
async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The first line of a memory-killed executor's report. Resident memory is rounded up, so it
/// never reads as equal to the limit it exceeded.
fn memory_note(limit: u64, resident: u64) -> String {
    const MIB: u64 = 1 << 20;
    let limit = match limit % MIB {
        0 => format!("{} MiB", limit / MIB),
        _ => format!("{limit} bytes"),
    };
    let resident = resident.div_ceil(MIB);
    format!("killed by flame: memory limit of {limit} exceeded (resident {resident} MiB)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_note_names_limit_and_usage() {
        assert_eq!(
            memory_note(256 << 20, (300 << 20) + 5),
            "killed by flame: memory limit of 256 MiB exceeded (resident 301 MiB)"
        );
        assert!(memory_note(1000, 4096).contains("limit of 1000 bytes"));
    }
}
