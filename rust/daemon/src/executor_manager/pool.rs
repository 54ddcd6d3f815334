//! The node's executor children: the slot limit, spawn and kill by executor id, exit
//! bookkeeping, and the shutdown that reaps every one of them.
//!
//! A child counts against the slots until its exit report has been taken from [`Pool::next_exit`]
//! — the same moment the session manager hears of it — so both sides agree on what is free.

use std::collections::HashMap;
use std::time::Duration;

use flame_core::ids::ExecutorId;
use flame_core::proto::ExecutorExited;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::process::{self, Executor};
use super::system::resolve_python;
use super::NodeConfig;

/// How long children get to exit by themselves first (the session manager tells them to stop
/// when it shuts down, and then they run on_session_leave), before any signal.
const SELF_EXIT: Duration = Duration::from_secs(1);
/// After SIGTERM, how long children get to exit on their own before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// After SIGKILL, how long to wait for the reports (only a process stuck in the kernel lasts).
const KILL_WAIT: Duration = Duration::from_secs(5);

pub(super) struct Pool {
    config: NodeConfig,
    children: HashMap<ExecutorId, Executor>,
    tracker: TaskTracker,
    exits_tx: mpsc::UnboundedSender<ExecutorExited>,
    exits: mpsc::UnboundedReceiver<ExecutorExited>,
}

impl Pool {
    pub(super) fn new(config: NodeConfig) -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Pool {
            config,
            children: HashMap::new(),
            tracker: TaskTracker::new(),
            exits_tx,
            exits,
        }
    }

    /// Starts executor `id`.
    ///
    /// # Errors
    /// An exit report to send at once when it cannot run: no free slot, or it failed to start.
    pub(super) fn spawn(&mut self, id: ExecutorId, python: &str) -> Result<(), ExecutorExited> {
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
        if self.children.len() >= self.config.slots as usize {
            let reason = format!(
                "node '{}' refused executor {id}: all {} slots are in use",
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

    /// The next child exit; the child no longer counts against the slots.
    pub(super) async fn next_exit(&mut self) -> ExecutorExited {
        // The pool holds a sender itself, so the channel never closes.
        let report = self.exits.recv().await.unwrap_or_default();
        self.children.remove(&ExecutorId(report.executor_id));
        report
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
