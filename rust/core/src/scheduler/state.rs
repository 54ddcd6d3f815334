//! The entities the scheduler tracks in memory: nodes, executors, sessions and the tasks that
//! are not finished yet. Finished tasks leave memory (they live on in storage). The ordered
//! indexes over them live in `index.rs`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::locality::TaskReads;
use crate::ids::{ClientId, ExecutorId, NodeId, SessionId, TaskId};
use crate::model::{SessionSpec, TaskCounts, TaskFailure};

/// An executor-manager node.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub slots: u32,
    /// Executors on this node in any state, starting ones included.
    pub executors: HashSet<ExecutorId>,
    /// Executors whose connection is gone but whose process the node has not reported as
    /// exited yet: they still hold a slot there.
    pub exiting: HashSet<ExecutorId>,
    /// Of `executors`, those blocked in a nested wait: they hold no slot while they wait
    /// (see `blocking.rs`), so the node may run that many beyond its slots.
    pub blocked: HashSet<ExecutorId>,
    /// Being drained: no executor is started or bound there; each leaves once its tasks end.
    pub draining: bool,
    /// Free slots as last entered in the free-node index (`None`: not in it).
    pub(super) free_key: Option<usize>,
}

impl Node {
    pub fn used_slots(&self) -> usize {
        (self.executors.len() + self.exiting.len()).saturating_sub(self.blocked.len())
    }

    /// More executors hold slots here than it has (some came back from a nested wait).
    pub fn over_slots(&self) -> bool {
        self.used_slots() > self.slots as usize
    }

    /// A new executor may start here: a slot is free and the node is not draining.
    pub fn has_free_slot(&self) -> bool {
        !self.draining && self.free_slots() > 0
    }

    pub fn free_slots(&self) -> usize {
        (self.slots as usize).saturating_sub(self.used_slots())
    }
}

/// Where an executor is in its life. Starting → Idle ⇄ (Binding → Bound → Unbinding) → Idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorState {
    /// Spawn requested; the process has not registered yet.
    Starting,
    /// Registered and bound to no session.
    Idle,
    /// Bind sent, `SessionEntered` not yet received. Tasks may already be dispatched: the
    /// stream keeps them behind the bind.
    Binding(SessionId),
    Bound(SessionId),
    /// Unbind sent, `SessionLeft` not yet received.
    Unbinding(SessionId),
}

#[derive(Debug)]
pub struct Executor {
    pub id: ExecutorId,
    pub node: NodeId,
    pub python: String,
    pub state: ExecutorState,
    /// Tasks dispatched to it and not finished, in dispatch order.
    pub inflight: VecDeque<TaskId>,
    /// When it last became bound with nothing to do (warm executor).
    pub idle_since: Option<Instant>,
    /// When the task at the head of `inflight` started: tasks run in dispatch order, so it
    /// is when it was dispatched to an empty window or when the task before it finished.
    pub head_since: Option<Instant>,
    /// Fair share asked this executor back: dispatch nothing more, unbind once drained.
    pub releasing: bool,
    /// The session this executor goes to once it is free (started for it, or reclaimed for
    /// it); that session counts it in `Session::starting` meanwhile.
    pub reserved_for: Option<SessionId>,
    /// The session it was last bound to, and that session's service fingerprint: what the
    /// data-aware policy matches an idle executor on.
    pub last_session: Option<SessionId>,
    pub last_app: Option<u64>,
    /// When the head task runs out of time, as entered in the timeout index.
    pub(super) deadline: Option<Instant>,
    /// Its running task waits on other tasks: it holds no slot and gets no tasks meanwhile.
    pub blocked: bool,
    /// Data-aware: since when it has had nothing to do while tasks of its session wait for
    /// other nodes, as entered in the index of such waits.
    pub(super) passed_over: Option<Instant>,
    /// Data-aware: it waited `data_wait` for a task for its node and now takes tasks that
    /// wait for other nodes, until it runs out of work.
    pub steals: bool,
}

impl Executor {
    /// The session this executor works for, if any.
    pub fn session(&self) -> Option<SessionId> {
        match self.state {
            ExecutorState::Binding(s) | ExecutorState::Bound(s) => Some(s),
            _ => None,
        }
    }
}

/// An unfinished task.
#[derive(Debug)]
pub struct TaskSlot {
    pub input: Bytes,
    /// Attempts started so far (a dispatch counts as an attempt).
    pub attempts: u32,
    /// Executor running it; `None` while pending.
    pub executor: Option<ExecutorId>,
    /// When the last attempt was dispatched, and where (kept after the attempt is lost, so
    /// a task that fails for good still says where it last ran).
    pub started: Option<Instant>,
    pub ran_on: Option<(ExecutorId, NodeId)>,
    /// Opaque token of the client stream to notify when it finishes.
    pub watcher: Option<u64>,
    /// The objects it reads (none for most tasks; then nothing is allocated).
    pub reads: TaskReads,
    /// While pending and waiting for an executor on a node that holds its data: which
    /// nodes (see `locality.rs`).
    pub waits: Option<Box<[NodeId]>>,
}

#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub spec: SessionSpec,
    pub created_ms: i64,
    /// Tasks any of its executors may take, in order.
    pub pending: VecDeque<TaskId>,
    /// Tasks waiting for an executor on a node holding their data, per node (a task is in
    /// the queue of each node it waits for; entries of tasks taken elsewhere are skipped).
    pub local: BTreeMap<NodeId, VecDeque<TaskId>>,
    /// The same tasks in queue order (oldest first, entries of tasks taken are skipped):
    /// what an executor that waited long enough takes.
    pub waiting_order: VecDeque<TaskId>,
    /// How many of its pending tasks wait so (exact; `local` and `waiting_order` are
    /// cleared when it is 0).
    pub waiting: u32,
    /// The node of its last executor placed near its data: the next one goes to a node
    /// after it (they take turns).
    pub(super) local_turn: NodeId,
    pub tasks: HashMap<TaskId, TaskSlot>,
    /// Executors bound or binding to this session.
    pub executors: HashSet<ExecutorId>,
    /// Executors being spawned for this session.
    pub starting: u32,
    pub counts: TaskCounts,
    /// Highest task counter seen per client: a resubmitted id at or below it is a duplicate.
    pub last_counter: HashMap<ClientId, u32>,
    /// Set when on_session_enter failed: the session cannot run anything.
    pub enter_failed: Option<TaskFailure>,
    /// Ids the daemon told a client it never stored (after a restart): their resubmission is
    /// accepted even though newer ids from that client were seen first.
    pub resubmittable: HashSet<TaskId>,
    /// Ids a client watched that are being looked up in storage. One submitted meanwhile
    /// (queued in the client while it reconnected) leaves this set when accepted, so the
    /// lookup's "never stored" answer does not invite a second submission of it.
    pub watching: HashSet<TaskId>,
    /// The tenant it counts against (0 for all when the tenant level is off).
    pub tenant: u32,
    /// Fingerprint of what its executors load (application, service spec, interpreter).
    pub app_key: u64,
    /// Of `executors`, how many are releasing (asked back, finishing their current tasks).
    pub releasing: u32,
    /// Of `executors`, how many are blocked in a nested wait (not counted as held).
    pub blocked: u32,
    /// The node of the executor it was last bound to: data-aware spawns go there first.
    pub last_node: Option<NodeId>,
    /// Where the session sits in the scheduler's indexes (see `index.rs`).
    pub(super) slot: super::index::IndexSlot,
    /// Moving average of how long its tasks run, in seconds (`None` until one finished):
    /// it sizes the window of tasks sent ahead to each executor.
    pub mean_run_secs: Option<f64>,
}

/// Weight of the newest sample in [`Session::mean_run_secs`].
const RUN_TIME_SMOOTHING: f64 = 0.05;

impl Session {
    /// Fold in how long a task ran. Results often arrive several at once; the first then
    /// carries their whole run time and the others zero, so the average stays right.
    pub fn record_run_time(&mut self, secs: f64) {
        self.mean_run_secs = Some(match self.mean_run_secs {
            None => secs,
            Some(mean) => mean + RUN_TIME_SMOOTHING * (secs - mean),
        });
    }

    /// How many tasks to keep in flight on one of its executors: at least `min`, and for
    /// short tasks enough to hold about `work` of them (so that one message to and from
    /// the executor carries many tasks), at most `max`.
    pub fn window(&self, min: usize, max: usize, work: f64) -> usize {
        match self.mean_run_secs {
            Some(mean) if mean > 0.0 => ((work / mean) as usize).clamp(min, max.max(min)),
            Some(_) => max.max(min),
            None => min,
        }
    }

    pub fn new(id: SessionId, spec: SessionSpec, created_ms: i64) -> Self {
        Self {
            id,
            spec,
            created_ms,
            pending: VecDeque::new(),
            local: BTreeMap::new(),
            waiting_order: VecDeque::new(),
            waiting: 0,
            local_turn: NodeId(0),
            tasks: HashMap::new(),
            executors: HashSet::new(),
            starting: 0,
            counts: TaskCounts::default(),
            last_counter: HashMap::new(),
            enter_failed: None,
            resubmittable: HashSet::new(),
            watching: HashSet::new(),
            tenant: 0,
            app_key: 0,
            releasing: 0,
            blocked: 0,
            last_node: None,
            slot: Default::default(),
            mean_run_secs: None,
        }
    }

    /// Most executors this session may hold.
    pub fn limit(&self) -> usize {
        if self.spec.slots == 0 {
            usize::MAX
        } else {
            self.spec.slots as usize
        }
    }

    /// How many executors would be useful right now: no more than there are unfinished tasks.
    pub fn wanted(&self) -> usize {
        if self.enter_failed.is_some() {
            return 0;
        }
        self.limit().min(self.tasks.len())
    }

    /// Executors it holds from the moment it opens, even idle (never above its limit).
    pub fn reserved(&self) -> usize {
        if self.enter_failed.is_some() {
            return 0;
        }
        (self.spec.min_executors as usize).min(self.limit())
    }

    /// How many executors it should hold: what is useful, and never less than its minimum.
    pub fn target(&self) -> usize {
        self.wanted().max(self.reserved())
    }

    /// Wants another executor now: below its minimum, or with queued work and room to grow.
    pub fn hungry(&self) -> bool {
        let held = self.held();
        held < self.reserved() || (self.queued() && held < self.target())
    }

    /// Executors held or on their way (blocked ones hold nothing while they wait).
    pub fn held(&self) -> usize {
        (self.executors.len() + self.starting as usize).saturating_sub(self.blocked as usize)
    }

    /// Executors held that are not being given back (nor blocked).
    pub fn kept(&self) -> usize {
        self.executors
            .len()
            .saturating_sub(self.releasing as usize + self.blocked as usize)
    }
}
