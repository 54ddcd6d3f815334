//! The session manager's actor: its state, start-up (reloading from storage) and event loop.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use flame_core::ids::{ClientId, ExecutorId, NodeId, SessionId, TaskKey};
use flame_core::model::{now_ms, ApplicationRecord};
use flame_core::scheduler::{Scheduler, SchedulerConfig};
use flame_core::storage::{Storage, WriteOp};
use flame_core::Result;

use super::{ClientTx, Event, ExecutorTx, ManagerConfig, ManagerHandle, NodeTx};
use crate::metrics::{Metrics, Throughput};
use crate::storage_writer::StorageWriter;

/// A connected executor-manager node.
pub(super) struct NodeLink {
    pub tx: NodeTx,
    pub name: String,
    pub last_seen: Instant,
    /// What it reported about itself (see `NodeInfo`).
    pub peer: String,
    pub cpus: u32,
    pub memory_total: u64,
    pub memory_available: u64,
    /// Draining, and whether it has been told it may exit.
    pub draining: bool,
    pub told_drained: bool,
}

pub(super) struct Actor {
    pub cfg: ManagerConfig,
    pub sched: Scheduler,
    pub store: StorageWriter,
    pub apps: HashMap<String, ApplicationRecord>,
    pub clients: HashMap<u64, ClientTx>,
    pub executors: HashMap<ExecutorId, ExecutorTx>,
    pub nodes: HashMap<NodeId, NodeLink>,
    pub next_session: u64,
    pub next_client: u32,
    pub next_node: u64,
    /// Executors of a session that died before registering, in a row.
    pub startup_failures: HashMap<SessionId, u32>,
    /// The client id each open client stream announced.
    pub conn_client: HashMap<u64, u32>,
    /// Open streams per client id.
    pub client_streams: HashMap<u32, usize>,
    /// Clients with no open stream, since when: their sessions close when the lease runs out.
    pub client_gone: HashMap<u32, Instant>,
    /// Executors whose stream closed, waiting (until the instant) for their node's exit report.
    pub lost_streams: HashMap<ExecutorId, Instant>,
    /// Sessions opened by tasks, by the executor whose process opened them (`nested.rs`).
    pub nested_sessions: HashMap<ExecutorId, Vec<SessionId>>,
    /// For events the actor sends itself (answers from the storage thread).
    pub self_tx: mpsc::UnboundedSender<Event>,
    /// A graceful stop in progress: when it must end, and who waits for it.
    pub draining: Option<(Instant, tokio::sync::oneshot::Sender<()>)>,
    /// What tasks printed, from the results handled since the last `apply`, which takes
    /// each log with its task's completion and drops the rest. Logs bypass the scheduler:
    /// they ride along with a result and never affect a decision.
    pub task_logs: HashMap<TaskKey, String>,
    pub metrics: Arc<Metrics>,
    /// Tasks finished per second, for the dashboard's chart.
    pub throughput: Throughput,
    /// When the actor started (the origin of `throughput`'s seconds).
    pub started: Instant,
    /// The last sessions closed, newest first, as they were when closed: the dashboard shows
    /// them without asking storage to count their tasks every second.
    pub closed_recently: VecDeque<flame_core::proto::SessionInfo>,
    /// Run times the executors reported (µs) for results not yet applied: `apply` turns them
    /// into start times and histogram samples, then clears the map (its capacity is reused).
    pub run_times: HashMap<flame_core::ids::TaskKey, u64>,
    /// When closed sessions are next pruned (see `retention.rs`).
    pub retention: super::retention::Retention,
    /// Where objects are on the nodes (#12; `objects.rs`).
    pub object_dir: super::objects::Objects,
    /// The identity of the head's state, told to nodes for their executors (#12).
    pub state_id: Arc<str>,
}

const META_SESSION: &str = "next_session_id";
const META_CLIENT: &str = "next_client_id";
const META_EXECUTOR_BASE: &str = "next_executor_base";
pub(super) const META_NODE: &str = "next_node_id";
/// Executor ids handed out per start of the session manager (ids stay unique across restarts).
const EXECUTOR_IDS_PER_START: u64 = 1 << 32;

/// Load state from `storage` and start the actor on the current tokio runtime.
///
/// # Errors
/// `FlameError::Storage` if the stored state cannot be read.
pub fn start(
    cfg: ManagerConfig,
    mut storage: Box<dyn Storage>,
) -> Result<(ManagerHandle, JoinHandle<()>, std::thread::JoinHandle<()>)> {
    let snapshot = storage.load()?;
    let state_id: Arc<str> = snapshot.identity.as_str().into();
    let meta = |k: &str, default: u64| snapshot.meta.get(k).copied().unwrap_or(default);
    let executor_base = meta(META_EXECUTOR_BASE, 1);
    let metrics = Metrics::new();
    let (store, storage_thread) =
        StorageWriter::start(storage, Some(metrics.storage_commit.clone()));
    store.write_only(vec![WriteOp::SetMeta {
        key: META_EXECUTOR_BASE.into(),
        value: executor_base + EXECUTOR_IDS_PER_START,
    }]);

    let mut sched = Scheduler::new(SchedulerConfig {
        window: cfg.window,
        window_max: cfg.window_max,
        release_delay: cfg.release_delay,
        first_executor_id: executor_base,
        policies: cfg.policies,
        data_wait: cfg.data_wait,
        ..SchedulerConfig::default()
    });
    for s in &snapshot.sessions {
        let counts = snapshot.counts.get(&s.id).copied().unwrap_or_default();
        sched.open_session(s.id, s.spec.clone(), s.created_ms, counts);
    }
    let restored = snapshot.tasks.len();
    let mut by_session: HashMap<SessionId, Vec<_>> = HashMap::new();
    for t in snapshot.tasks {
        by_session
            .entry(t.key.session)
            .or_default()
            .push((t.key.task, t.input, t.attempts));
    }
    for (sid, tasks) in by_session {
        sched.enqueue(sid, tasks, None);
    }
    tracing::info!(
        sessions = snapshot.sessions.len(),
        tasks = restored,
        "session manager state loaded"
    );

    // Owners of restored sessions have no stream yet: their lease starts now.
    let started = Instant::now();
    let client_gone = snapshot
        .sessions
        .iter()
        .filter(|s| s.spec.owner != 0)
        .map(|s| s.spec.owner)
        .map(|owner| (owner, started))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = Actor {
        cfg: cfg.clone(),
        sched,
        store,
        apps: snapshot
            .applications
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect(),
        clients: HashMap::new(),
        executors: HashMap::new(),
        nodes: HashMap::new(),
        next_session: meta(META_SESSION, 1),
        next_client: meta(META_CLIENT, 1) as u32,
        // Persisted, so a node that rejoins a restarted head keeps its id.
        next_node: meta(META_NODE, 1),
        startup_failures: HashMap::new(),
        conn_client: HashMap::new(),
        client_streams: HashMap::new(),
        client_gone,
        lost_streams: HashMap::new(),
        nested_sessions: HashMap::new(),
        self_tx: tx.clone(),
        draining: None,
        task_logs: HashMap::new(),
        metrics: metrics.clone(),
        throughput: Throughput::default(),
        started,
        closed_recently: VecDeque::new(),
        run_times: HashMap::new(),
        retention: super::retention::Retention::new(cfg.result_retention, started),
        object_dir: Default::default(),
        state_id: state_id.clone(),
    };
    let task = tokio::spawn(actor.run(rx));
    let handle = ManagerHandle {
        tx,
        config: cfg,
        metrics,
        state_id,
    };
    Ok((handle, task, storage_thread))
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => Some(ev),
                    None => break,
                },
                _ = sleep => None,
            };
            let now = Instant::now();
            if let Some(ev) = first {
                let mut next = Some(ev);
                let mut handled = 0;
                while let Some(ev) = next.take() {
                    match ev {
                        Event::Shutdown { reply } => self.start_drain(reply, now),
                        ev => self.handle(ev, now),
                    }
                    handled += 1;
                    if handled < 4096 {
                        next = rx.try_recv().ok();
                    }
                }
            }
            self.check_heartbeats(now);
            self.check_leases(now);
            self.check_retention(now);
            self.check_lost_streams(now);
            let pass = Instant::now();
            self.sched.schedule(now);
            self.metrics.schedule.record(pass.elapsed().as_secs_f64());
            let actions = self.sched.take_actions();
            self.apply(actions);
            self.release_drained_nodes();
            if self.drained(now) {
                self.shutdown().await;
                if let Some((_, reply)) = self.draining.take() {
                    let _ = reply.send(());
                }
                return;
            }
        }
    }

    /// Begin a graceful stop: nothing new is dispatched; running tasks get `drain_grace`.
    fn start_drain(&mut self, reply: tokio::sync::oneshot::Sender<()>, now: Instant) {
        if self.draining.is_some() {
            // Already stopping: the earlier caller is answered; so is this one, then.
            let _ = reply.send(());
            return;
        }
        let running = self.sched.running_tasks();
        tracing::info!(running, grace = ?self.cfg.drain_grace, "stopping: letting running tasks finish");
        self.sched.drain();
        self.draining = Some((now + self.cfg.drain_grace, reply));
    }

    /// Whether a graceful stop can end now: nothing runs, or the grace is over.
    fn drained(&self, now: Instant) -> bool {
        match &self.draining {
            Some((deadline, _)) => self.sched.running_tasks() == 0 || now >= *deadline,
            None => false,
        }
    }

    /// Executors whose stream closed and whose node said nothing in time: lost.
    fn check_lost_streams(&mut self, now: Instant) {
        let due: Vec<ExecutorId> = self
            .lost_streams
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.lost_streams.remove(&id);
            self.sched
                .executor_lost(id, "its connection to the session manager closed", now);
        }
    }

    /// Close the sessions of clients that have been gone longer than the lease, and delete
    /// their objects.
    fn check_leases(&mut self, now: Instant) {
        let lease = self.cfg.client_lease;
        let expired: Vec<u32> = self
            .client_gone
            .iter()
            .filter(|(_, since)| **since + lease <= now)
            .map(|(c, _)| *c)
            .collect();
        for client in expired {
            self.client_gone.remove(&client);
            let owned: Vec<SessionId> = self
                .sched
                .sessions()
                .filter(|s| s.spec.owner == client)
                .map(|s| s.id)
                .collect();
            for sid in owned {
                tracing::warn!(session = %sid, client, ?lease, "closing a session whose client is gone");
                self.remember_closed(sid);
                let why = flame_core::model::TaskFailure::new(
                    flame_core::model::ErrorKind::ErrorSessionClosed,
                    format!(
                        "session {sid} was closed: its client was out of reach longer than its \
                         lease (client_lease_ms = {})",
                        lease.as_millis()
                    ),
                );
                self.sched.close_session_failing(sid, Some(why));
                self.store.write_only(vec![WriteOp::CloseSession {
                    id: sid,
                    closed_ms: now_ms(),
                }]);
            }
            self.delete_client_objects(ClientId(client));
        }
    }

    /// The earliest moment something must happen without an event: a warm executor's delay
    /// running out, or a node's heartbeat deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let heartbeats = self
            .nodes
            .values()
            .map(|n| n.last_seen + self.cfg.node_timeout);
        let leases = self
            .client_gone
            .values()
            .map(|since| *since + self.cfg.client_lease);
        let drain = self.draining.as_ref().map(|(d, _)| *d);
        let lost = self.lost_streams.values().copied();
        heartbeats
            .chain(Some(self.retention.next_at))
            .chain(leases)
            .chain(lost)
            .chain(drain)
            .chain(self.sched.next_deadline())
            .min()
    }

    fn check_heartbeats(&mut self, now: Instant) {
        let timeout = self.cfg.node_timeout;
        let dead: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.last_seen + timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            tracing::warn!(node = %id, "node missed its heartbeats; its executors are lost");
            self.node_gone(id, now);
        }
    }

    /// Stop every executor, drop every stream, and wait until storage has everything.
    async fn shutdown(&mut self) {
        for tx in self.executors.values() {
            let _ = tx.send(Ok(super::workers::shutdown_command(
                "the session manager is stopping",
            )));
        }
        self.executors.clear();
        self.clients.clear();
        self.nodes.clear();
        // Bounded: with storage failing, the flush would wait for the disk to recover.
        let flush = self.store.flush();
        match tokio::time::timeout(crate::storage_writer::GIVE_UP_AFTER, flush).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final storage flush failed"),
            Err(_) => tracing::error!(
                "storage still failing at stop: unstored tasks run again after a restart"
            ),
        }
        tracing::info!(at_ms = now_ms(), "session manager stopped");
    }
}
