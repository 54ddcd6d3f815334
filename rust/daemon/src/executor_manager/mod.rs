//! The executor manager ("node agent"): one per machine. It registers the node with the
//! session manager over `NodeStream`, sends heartbeats, starts and kills executor processes
//! when told to, and reports every exit the moment it happens.
//!
//! The node never decides what runs: the session manager asks for executors by id and the
//! executors then talk to it directly over their own `ExecutorStream`. What the node owns is
//! the processes — and it must never leave one behind: when it stops every child is
//! terminated and reaped before [`run_node`] returns, and a child over the memory limit is
//! killed before it can take the machine (and the node) down with it.
//!
//! The node outlives its session manager. When the stream ends or breaks it stops its
//! executors — the session manager that knew them is gone, and a new one will ask for new
//! ones — and registers again, under the id it had, as soon as a session manager answers.
//!
//! A node with a drain grace does not stop at once when shut down (SIGTERM): it tells the
//! session manager it is draining (`NodeDrain`), keeps serving while the tasks already sent
//! to its executors finish and the session manager retires them, and exits when told it is
//! drained (`NodeDrained`) or when the grace runs out. A session manager can also drain a
//! node on its own (`flame-daemon drain`); the node then exits on `NodeDrained` the same way.
//! It reports its CPUs and memory on registering and `MemAvailable` with every heartbeat, and
//! runs no more executors than fit in its memory at the executor memory limit.
//!
//! Every node owns an object store (#12, [`local_objects`]): it is made when the node starts,
//! served to local processes on a Unix socket ([`object_socket`]), reported to the head
//! (everything held on each registration, copies and removals as they happen, figures with
//! each heartbeat) and removed with its dirs when the node stops.
//!
//! Layout: [`connection`] (connect + register, backoff), [`pool`] (slots, spawn/kill, memory
//! limit, shutdown), [`process`] (one child: pipes, signals, exit report), [`spawner`] (the
//! thread every executor is forked from), [`system`] (host facts), [`join`] (a node's
//! credentials: joining with a join token, kept for restarts), [`credentials`] (handing
//! them to executors), [`local_objects`] and [`object_socket`] (the object store).

mod connection;
mod credentials;
pub mod join;
mod local_objects;
mod object_socket;
mod pool;
mod process;
mod spawner;
mod system;

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flame_core::client::Credentials;
use flame_core::error::{FlameError, Result};
use flame_core::ids::ExecutorId;
use flame_core::objects::remote::RemoteFetch;
use flame_core::proto::{
    node_command, node_message, ExecutorExited, Heartbeat, NodeCommand, NodeDrain, NodeMessage,
};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use connection::{Backoff, HeadStream};
use local_objects::LocalObjects;
use pool::Pool;
pub use system::default_node_name;

/// After stopping, how long to wait for the session manager to close the node stream.
const LINGER: Duration = Duration::from_secs(1);
/// A registration that lasted this long was not a flapping head: the backoff starts over.
const STABLE: Duration = Duration::from_secs(10);

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
    /// SIGKILL an executor whose resident memory (VmRSS, checked every 200 ms) exceeds this
    /// many bytes; its exit report says so. Only the executor process itself is measured.
    /// `None`: no limit.
    pub executor_memory_bytes: Option<u64>,
    /// Memory this node offers, in bytes; `None`: the machine's (`MemTotal`). With an
    /// executor memory limit, the node runs no more executors than fit in it.
    pub memory_bytes: Option<u64>,
    /// Local address the node's connection to the head comes from (e.g. `127.0.0.2`, or
    /// the interface that faces the head); `None`: chosen by the OS.
    pub bind: Option<std::net::IpAddr>,
    /// On shutdown, how long to drain first: the head places nothing new here and the
    /// tasks already sent finish; then the node stops. Zero: stop at once.
    pub drain_grace: Duration,
    /// What the node shows the head (a node token, or its certificate and the CA); its
    /// executors get the same through their environment (see [`credentials`]).
    pub credentials: Credentials,
    /// Bytes of objects the node's store keeps in memory (`object_store_mb`); `None`: 30 %
    /// of [`NodeConfig::memory_total`].
    pub object_store_bytes: Option<u64>,
    /// Where a tmpfs for the store's memory dir is looked for (`/dev/shm`); `None`, or no
    /// tmpfs there: the work dir.
    pub object_shm_root: Option<PathBuf>,
    /// Told the node's id and object socket whenever it registers (`None` when it stops):
    /// the head of `flame-daemon start` hands them to its clients (`HelloReply`).
    pub local_report: Option<LocalNodeReport>,
    /// How the node brings objects it lacks from other nodes when a local process pulls
    /// them; `None`: such a pull is NOT_FOUND.
    pub remote_fetch: Option<Arc<dyn RemoteFetch>>,
    /// Port of the node's object server (#12, [`crate::node_objects`]); 0: any free one.
    pub object_port: u16,
    /// The object server's address as reported to the head: set by [`run_node`] once it
    /// listens (a value given here is replaced).
    pub object_address: String,
}

/// Where a node's object store is reached, for processes of its machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub node_id: u64,
    /// The node's `NodeObjects` Unix socket.
    pub socket: PathBuf,
}

/// Where a node publishes its [`LocalNode`] (a head's own node: to the head).
pub type LocalNodeReport = Arc<tokio::sync::watch::Sender<Option<LocalNode>>>;

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
            executor_memory_bytes: None,
            memory_bytes: None,
            bind: None,
            drain_grace: Duration::ZERO,
            credentials: Credentials::none(),
            object_store_bytes: None,
            object_shm_root: Some(PathBuf::from(flame_core::objects::store::SHM_ROOT)),
            local_report: None,
            remote_fetch: None,
            object_port: 0,
            object_address: String::new(),
        }
    }

    /// The memory this node offers: configured, else the machine's total (0: unknown).
    pub fn memory_total(&self) -> u64 {
        self.memory_bytes.unwrap_or_else(system::memory_bytes)
    }

    /// The executors this node may run: its slots, and with an executor memory limit no
    /// more than fit in `memory_total` (at least one, so a small node still works).
    pub fn effective_slots(&self, memory_total: u64) -> u32 {
        match self.executor_memory_bytes {
            Some(limit) if limit > 0 && memory_total > 0 => {
                let fit = u32::try_from(memory_total / limit).unwrap_or(u32::MAX);
                self.slots.min(fit.max(1))
            }
            _ => self.slots,
        }
    }

    /// Checks what can be checked before connecting.
    ///
    /// # Errors
    /// [`FlameError::InvalidArgument`] for no slots, an empty executor command, or a memory
    /// limit of 0.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Err(FlameError::InvalidArgument(what.into()));
        if self.slots == 0 {
            return invalid("a node needs at least one slot");
        }
        if self.executor_command.as_ref().is_some_and(Vec::is_empty) {
            return invalid("the executor command is empty");
        }
        if self.executor_memory_bytes == Some(0) {
            return invalid("the executor memory limit must be more than 0");
        }
        if self.memory_bytes == Some(0) {
            return invalid("the node memory must be more than 0");
        }
        if self.object_store_bytes == Some(0) {
            return invalid("the object store budget (object_store_mb) must be more than 0");
        }
        Ok(())
    }
}

/// Runs the node until `shutdown` is cancelled, then stops and reaps every executor it
/// started (a moment to exit by themselves, SIGTERM, up to 3 s, SIGKILL) before returning.
///
/// When the session manager ends or breaks the stream, the node stops its executors the same
/// way and registers again (backoff 100 ms doubling to 2 s, asking for the id it had), for as
/// long as it takes: the head restarting does not take the node down.
///
/// # Errors
/// Only what retrying cannot fix: [`FlameError::InvalidArgument`] for a bad address, an
/// unusable work dir or an invalid config (see [`NodeConfig::validate`]), and
/// [`FlameError::Unreachable`] when the session manager cannot be reached (or does not accept
/// the node) within ~30 s of starting — it never was, so the address is likely wrong.
pub async fn run_node(
    mut config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<(), FlameError> {
    config.validate()?;
    let fit = config.effective_slots(config.memory_total());
    if fit < config.slots {
        tracing::info!(
            slots = config.slots,
            fit,
            "only {fit} executors fit in the node's memory at the executor memory limit"
        );
        config.slots = fit;
    }
    // Made private if it is new; an existing one (by default the cwd) is the user's to keep.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(flame_core::private_files::DIR_MODE)
        .create(&config.work_dir)
        .map_err(|e| {
            FlameError::InvalidArgument(format!(
                "executor work dir {}: {e}",
                config.work_dir.display()
            ))
        })?;
    let mut objects = LocalObjects::start(&config)?;
    config.env.extend(objects.env());
    // The object server listens before the node registers (its address goes into
    // NodeRegister); its fetcher brings objects from other nodes unless one is configured.
    let plane = crate::node_objects::ObjectPlane::start(&config, objects.store.clone()).await?;
    config.object_address = plane.address.clone();
    objects.set_gate(plane.gate());
    match &config.remote_fetch {
        Some(fetch) => objects.set_fetch(fetch.clone()),
        None => objects.set_fetch(Arc::new(plane.fetcher().clone())),
    }
    let result = run_registrations(&mut config, &mut objects, &plane, &shutdown).await;
    if let Some(report) = &config.local_report {
        report.send_replace(None);
    }
    // Executors are gone by now (every registration reaps its own): nothing maps the
    // store's files any more, and its dirs go.
    objects.stop().await;
    result
}

/// Registers again and again until shutdown (see [`run_node`]).
async fn run_registrations(
    config: &mut NodeConfig,
    objects: &mut LocalObjects,
    plane: &crate::node_objects::ObjectPlane<flame_core::objects::store::ObjectStore>,
    shutdown: &CancellationToken,
) -> Result<(), FlameError> {
    let mut backoff = Backoff::new();
    let mut node_id = None;
    let mut transport = None;
    // Files of the executors' credentials; removed when the node stops.
    let mut executor_credentials = None;
    loop {
        let connected =
            connection::connect(config, &mut transport, node_id, &mut backoff, shutdown);
        let Some(head) = connected.await? else {
            return Ok(());
        };
        if let (None, Some(t)) = (&executor_credentials, &transport) {
            let files = credentials::ExecutorCredentials::write(&config.credentials, t)?;
            config.env.extend(files.env());
            executor_credentials = Some(files);
        }
        let id = head.registered.node_id;
        match node_id {
            Some(previous) => tracing::info!(node = id, previous, "node registered again"),
            None => tracing::info!(
                node = id,
                name = %config.name,
                slots = config.slots,
                head = %config.head,
                "node registered"
            ),
        }
        node_id = Some(id);
        if let Some(report) = &config.local_report {
            report.send_replace(Some(LocalNode {
                node_id: id,
                socket: objects.store.socket_path(),
            }));
        }
        if let Some(t) = &transport {
            plane.registered(t, id);
        }
        let since = Instant::now();
        let end = serve(config, head, objects, shutdown).await;
        if shutdown.is_cancelled() || matches!(end, End::Drained) {
            return Ok(());
        }
        // A closed stream is the head stopping in order (restarting, or shutting down with
        // a local node that is about to be told to stop too); a broken one is an outage.
        match end {
            End::Lost(_) | End::Fenced(_) => {
                tracing::warn!(head = %config.head, "{end}; executors stopped, registering again")
            }
            _ => tracing::info!(head = %config.head, "{end}; executors stopped, registering again"),
        }
        // A head that accepts and then drops the node at once must not be hammered; and a
        // moment's pause lets a shutdown that is on its way arrive before any attempt.
        if since.elapsed() >= STABLE {
            backoff.reset();
        }
        if !backoff.wait(shutdown).await {
            return Ok(());
        }
    }
}

/// Serves one registration until shutdown or the stream's end, then stops every executor.
async fn serve(
    config: &NodeConfig,
    head: HeadStream,
    objects: &mut LocalObjects,
    shutdown: &CancellationToken,
) -> End {
    // Executors learn the node's id (known now) beside its socket and memory dir.
    let mut pool_config = config.clone();
    pool_config.env.push((
        flame_core::client::node_objects::NODE_ID_ENV.into(),
        head.registered.node_id.to_string(),
    ));
    // And the cluster's id: a task refuses refs of another cluster, as its client does.
    pool_config.env.push((
        flame_core::client::node_objects::CLUSTER_ENV.into(),
        head.registered.state_id.clone(),
    ));
    let mut node = Node {
        pool: Pool::new(pool_config),
        head,
        grace: config.drain_grace,
        objects,
    };
    // A restarted head rebuilds its directory of objects from these.
    if let Some(held) = node.objects.announce_all() {
        node.send(held).await;
    }
    let end = node.serve(&config.head, shutdown).await;
    // Exit reports still go out if the stream is up: the session manager can then requeue at
    // once instead of waiting for the node to be declared dead.
    let Node { pool, head, .. } = node;
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
    end
}

/// Why a registration ended.
enum End {
    Shutdown,
    /// The head drained the node and told it to go.
    Drained,
    Closed,
    Lost(String),
    /// Nothing heard from the head for its node timeout (#13).
    Fenced(Duration),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Shutdown => f.write_str("node shutting down"),
            End::Drained => f.write_str("node drained"),
            End::Closed => f.write_str("the session manager closed the node stream"),
            End::Lost(reason) => write!(f, "lost the session manager: {reason}"),
            End::Fenced(silence) => write!(
                f,
                "heard nothing from the session manager for {silence:?} (its node timeout): \
                 fenced"
            ),
        }
    }
}

struct Node<'a> {
    pool: Pool,
    head: HeadStream,
    grace: Duration,
    objects: &'a mut LocalObjects,
}

impl Node<'_> {
    async fn serve(&mut self, address: &str, shutdown: &CancellationToken) -> End {
        // 0 would mean "no heartbeats", which no session manager wants; take one a second.
        let period = match self.head.registered.heartbeat_ms {
            0 => Duration::from_secs(1),
            ms => Duration::from_millis(u64::from(ms)),
        };
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // #13: by the time the head has heard nothing from this node for its node timeout,
        // it has declared the node lost and given its tasks to other nodes. A node cut off
        // from the head sees the same silence from its side (the head answers every
        // heartbeat): it stops its executors then, so their tasks stop running twice, and
        // registers again. An older head sends no timeout (0): no fencing.
        let fence_after = match self.head.registered.node_timeout_ms {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        };
        let mut last_heard = Instant::now();
        let silence = |since: Instant| async move {
            match fence_after {
                Some(after) => tokio::time::sleep_until(since + after).await,
                None => std::future::pending().await,
            }
        };
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Set once shutdown asks for a drain: when to stop waiting for the head's word.
        let mut drain_until: Option<Instant> = None;
        let drain_deadline = |until: Option<Instant>| async move {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled(), if drain_until.is_none() => {
                    if self.grace.is_zero() {
                        return End::Shutdown;
                    }
                    tracing::info!(grace = ?self.grace, "draining: the head places nothing new here");
                    drain_until = Some(Instant::now() + self.grace);
                    self.send(NodeMessage { msg: Some(node_message::Msg::Drain(NodeDrain {})) }).await;
                }
                _ = drain_deadline(drain_until) => {
                    tracing::warn!(grace = ?self.grace, "drain grace over; stopping the executors left");
                    return End::Shutdown;
                }
                _ = silence(last_heard) => {
                    let silence = fence_after.unwrap_or_default();
                    tracing::warn!(?silence, "no word from the session manager; fencing: stopping every executor");
                    return End::Fenced(silence);
                }
                exit = self.pool.next_exit() => self.send(exited(exit)).await,
                report = self.objects.next_report() => self.send(report).await,
                command = self.head.commands.message() => {
                    last_heard = Instant::now();
                    match command {
                        Ok(Some(NodeCommand { msg: Some(node_command::Msg::Drained(_)) })) => {
                            return End::Drained;
                        }
                        Ok(Some(command)) => self.handle(command).await,
                        Ok(None) => return End::Closed,
                        Err(status) => return End::Lost(format!("{address}: {}", status.message())),
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = Heartbeat {
                        memory_available: system::memory_available_bytes(),
                        objects: Some(self.objects.stats()),
                    };
                    self.send(NodeMessage { msg: Some(node_message::Msg::Heartbeat(beat)) }).await;
                }
            }
        }
    }

    async fn handle(&mut self, command: NodeCommand) {
        match command.msg {
            Some(node_command::Msg::Drained(_)) => {} // handled in `serve`
            // Only proves the head still hears us: `serve` noted when it came.
            Some(node_command::Msg::HeadHeartbeat(_)) => {}
            Some(node_command::Msg::Spawn(spawn)) => {
                if let Err(refused) = self.pool.spawn(
                    ExecutorId(spawn.executor_id),
                    &spawn.python,
                    spawn.beyond_slots,
                ) {
                    self.send(exited(refused)).await;
                }
            }
            Some(node_command::Msg::Kill(kill)) => {
                self.pool.kill(ExecutorId(kill.executor_id), &kill.reason)
            }
            Some(node_command::Msg::DeleteObjects(refs)) => {
                self.objects.delete(refs.object_ids).await;
            }
            Some(node_command::Msg::AccessRevoked(r)) => {
                self.objects.access_revoked(r.cert_fingerprints)
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
