//! The executor manager ("node agent"): one per machine. It registers the node with the
//! session manager over `NodeStream`, sends heartbeats, starts and kills executor processes
//! when told to, and reports every exit the moment it happens.
//!
//! The node never decides what runs: the session manager asks for executors by id and the
//! executors then talk to it directly over their own `ExecutorStream`. What the node owns is
//! the processes — and it must never leave one behind: when it stops (shutdown, or the session
//! manager going away) every child is terminated and reaped before [`run_node`] returns.
//!
//! Layout: [`connection`] (connect + register), [`pool`] (slots, spawn/kill, shutdown),
//! [`process`] (one child: pipes, signals, exit report), [`system`] (host facts).

mod connection;
mod pool;
mod process;
mod system;

use std::path::PathBuf;
use std::time::Duration;

use flame_core::error::{FlameError, Result};
use flame_core::ids::ExecutorId;
use flame_core::proto::{
    node_command, node_message, ExecutorExited, Heartbeat, NodeCommand, NodeMessage,
};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use connection::HeadStream;
use pool::Pool;
pub use system::default_node_name;

/// After stopping, how long to wait for the session manager to close the node stream.
const LINGER: Duration = Duration::from_secs(1);

/// How a node runs its executors.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Session manager address, e.g. `"http://127.0.0.1:4567"`; executors get it too.
    pub head: String,
    /// Node name (default: the host name).
    pub name: String,
    /// Most executor processes at once.
    pub slots: u32,
    /// Default interpreter for executors, e.g. `"python3"`.
    pub python: String,
    /// Replaces `{python} -m flame._executor` (tests use `flame-echo-executor`); the node
    /// appends `--address <head> --executor-id <id>`.
    pub executor_command: Option<Vec<String>>,
    /// Working directory of the executors; created if missing.
    pub work_dir: PathBuf,
    /// Extra environment for the executors.
    pub env: Vec<(String, String)>,
}

impl NodeConfig {
    /// Defaults for a node of this machine: host name, one slot per CPU, `python3`, the
    /// current directory.
    pub fn new(head: impl Into<String>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        NodeConfig {
            head: head.into(),
            name: default_node_name(),
            slots: u32::try_from(cpus).unwrap_or(u32::MAX),
            python: "python3".into(),
            executor_command: None,
            work_dir: std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir()),
            env: Vec::new(),
        }
    }
}

/// Runs the node until `shutdown` is cancelled or the session manager ends the stream; then
/// stops and reaps every executor it started (SIGTERM, up to 3 s, SIGKILL) before returning.
///
/// # Errors
/// [`FlameError::Unreachable`] when the session manager cannot be reached (or does not accept
/// the node) within ~30 s, [`FlameError::ConnectionLost`] when the stream breaks, and
/// [`FlameError::InvalidArgument`] for a bad address or an unusable work dir.
pub async fn run_node(config: NodeConfig, shutdown: CancellationToken) -> Result<(), FlameError> {
    std::fs::create_dir_all(&config.work_dir).map_err(|e| {
        FlameError::InvalidArgument(format!(
            "executor work dir {}: {e}",
            config.work_dir.display()
        ))
    })?;
    let Some(head) = connection::connect(&config, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(
        node = head.registered.node_id,
        name = %config.name,
        slots = config.slots,
        head = %config.head,
        "node registered"
    );
    let address = config.head.clone();
    let mut node = Node {
        pool: Pool::new(config),
        head,
    };
    let outcome = node.serve(&address, &shutdown).await;
    // Exit reports still go out if the stream is up: the session manager can then requeue at
    // once instead of waiting for the node to be declared dead.
    let Node { pool, head } = node;
    pool.shutdown(|exit| {
        let _ = head.outbox.try_send(exited(exit));
    })
    .await;
    // Dropping the stream at once could cut those reports off in flight. End our side, and
    // wait (briefly) for the session manager to end its own: then it has read everything.
    let HeadStream {
        outbox,
        mut commands,
        ..
    } = head;
    drop(outbox);
    let drained = async { while let Ok(Some(_)) = commands.message().await {} };
    let _ = tokio::time::timeout(LINGER, drained).await;
    outcome
}

struct Node {
    pool: Pool,
    head: HeadStream,
}

impl Node {
    async fn serve(&mut self, address: &str, shutdown: &CancellationToken) -> Result<()> {
        // 0 would mean "no heartbeats", which no session manager wants; take one a second.
        let period = match self.head.registered.heartbeat_ms {
            0 => Duration::from_secs(1),
            ms => Duration::from_millis(u64::from(ms)),
        };
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                exit = self.pool.next_exit() => self.send(exited(exit)).await,
                command = self.head.commands.message() => match command {
                    Ok(Some(command)) => self.handle(command).await,
                    Ok(None) => {
                        tracing::info!(head = %address, "session manager closed the node stream");
                        return Ok(());
                    }
                    Err(status) => {
                        let reason = format!("{address}: {}", status.message());
                        return Err(FlameError::ConnectionLost(reason));
                    }
                },
                _ = heartbeat.tick() => {
                    self.send(NodeMessage { msg: Some(node_message::Msg::Heartbeat(Heartbeat {})) }).await;
                }
            }
        }
    }

    async fn handle(&mut self, command: NodeCommand) {
        match command.msg {
            Some(node_command::Msg::Spawn(spawn)) => {
                if let Err(refused) = self
                    .pool
                    .spawn(ExecutorId(spawn.executor_id), &spawn.python)
                {
                    self.send(exited(refused)).await;
                }
            }
            Some(node_command::Msg::Kill(kill)) => {
                self.pool.kill(ExecutorId(kill.executor_id), &kill.reason)
            }
            Some(node_command::Msg::Registered(_)) => {
                tracing::warn!("NodeRegistered after registration; ignored");
            }
            None => tracing::warn!("node command without a body; ignored"),
        }
    }

    async fn send(&self, message: NodeMessage) {
        // Fails only when the stream is gone; the command side then reports how it ended.
        let _ = self.head.outbox.send(message).await;
    }
}

fn exited(exit: ExecutorExited) -> NodeMessage {
    NodeMessage {
        msg: Some(node_message::Msg::Exited(exit)),
    }
}
