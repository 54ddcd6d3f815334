//! Domain types: applications, sessions, tasks, their states and legal transitions, and the
//! conversions between them and the wire types in [`crate::proto`].

use bytes::Bytes;

use crate::error::{FlameError, Result};
use crate::ids::{SessionId, TaskId, TaskKey};
use crate::proto;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskState {
    /// A finished task never changes state again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The legal moves of the task state machine. Running → Pending is a retry after the
    /// executor was lost (or the daemon restarted).
    pub fn can_move_to(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Pending, Running)
                | (Running, Pending)
                | (Pending | Running, Succeeded | Failed | Cancelled)
        )
    }

    pub fn as_i32(self) -> i32 {
        proto::TaskState::from(self) as i32
    }

    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 5] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The state as users spell it (CLI, dashboard, JSON): `pending`, `running`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name` (any case).
    ///
    /// # Errors
    /// `InvalidArgument` listing the accepted names.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                FlameError::InvalidArgument(format!(
                    "unknown task state '{name}'; use pending, running, succeeded, failed or \
                     cancelled"
                ))
            })
    }

    pub fn from_i32(v: i32) -> Result<Self> {
        match proto::TaskState::try_from(v) {
            Ok(proto::TaskState::TaskPending) => Ok(Self::Pending),
            Ok(proto::TaskState::TaskRunning) => Ok(Self::Running),
            Ok(proto::TaskState::TaskSucceeded) => Ok(Self::Succeeded),
            Ok(proto::TaskState::TaskFailed) => Ok(Self::Failed),
            Ok(proto::TaskState::TaskCancelled) => Ok(Self::Cancelled),
            _ => Err(FlameError::InvalidArgument(format!(
                "unknown task state {v}"
            ))),
        }
    }
}

impl From<TaskState> for proto::TaskState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => Self::TaskPending,
            TaskState::Running => Self::TaskRunning,
            TaskState::Succeeded => Self::TaskSucceeded,
            TaskState::Failed => Self::TaskFailed,
            TaskState::Cancelled => Self::TaskCancelled,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Open,
    Closed,
}

/// Why a task failed; see `ErrorKind` in the proto for the meaning of each.
pub type ErrorKind = proto::ErrorKind;

impl ErrorKind {
    /// Whether the failure is worth another attempt on another executor.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::ErrorExecutorLost)
    }
}

/// A task failure, classified once where it is first seen.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFailure {
    pub kind: ErrorKind,
    pub message: String,
    pub traceback: String,
    /// The pickled exception (Python services); may be empty.
    pub payload: Bytes,
    /// The service asked for this failure to be retried while attempts remain.
    pub retryable: bool,
}

impl TaskFailure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            traceback: String::new(),
            payload: Bytes::new(),
            retryable: false,
        }
    }
}

impl From<TaskFailure> for proto::TaskError {
    fn from(f: TaskFailure) -> Self {
        Self {
            kind: f.kind as i32,
            message: f.message,
            traceback: f.traceback,
            payload: f.payload,
            retryable: f.retryable,
        }
    }
}

impl From<proto::TaskError> for TaskFailure {
    fn from(e: proto::TaskError) -> Self {
        Self {
            kind: ErrorKind::try_from(e.kind).unwrap_or(ErrorKind::ErrorInternal),
            message: e.message,
            traceback: e.traceback,
            payload: e.payload,
            retryable: e.retryable,
        }
    }
}

/// What a session runs and how. Mirrors `proto::SessionSpec`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSpec {
    pub application: String,
    pub app_spec: Bytes,
    pub common_data: Bytes,
    /// Most executors the session may hold; 0 means no limit.
    pub slots: u32,
    pub max_retries: u32,
    /// Per-task time limit in seconds; 0 means none.
    pub timeout_secs: f64,
    pub priority: i32,
    pub python: String,
    /// The client that owns the session; 0 = nobody (never closed for a lost client).
    pub owner: u32,
    /// Relative share under fair share (> 0; 1 by default).
    pub weight: f64,
    /// Executors held from the moment the session opens, even while idle (at most `slots`
    /// when that is set).
    pub min_executors: u32,
    /// The tenant for per-tenant fair share; empty means the owner client.
    pub user: String,
}

impl Default for SessionSpec {
    fn default() -> Self {
        Self {
            application: String::new(),
            app_spec: Bytes::new(),
            common_data: Bytes::new(),
            slots: 0,
            max_retries: 0,
            timeout_secs: 0.0,
            priority: 0,
            python: String::new(),
            owner: 0,
            weight: 1.0,
            min_executors: 0,
            user: String::new(),
        }
    }
}

impl TryFrom<proto::SessionSpec> for SessionSpec {
    type Error = FlameError;

    fn try_from(p: proto::SessionSpec) -> Result<Self> {
        if p.application.trim().is_empty() {
            return Err(FlameError::InvalidArgument(
                "session spec needs an application name".into(),
            ));
        }
        if !p.timeout_secs.is_finite() || p.timeout_secs < 0.0 {
            return Err(FlameError::InvalidArgument(format!(
                "timeout must be a non-negative number of seconds, got {}",
                p.timeout_secs
            )));
        }
        // `slots` is the old name of `max_executors`: either may be set, not both differently.
        let max = match (p.slots, p.max_executors) {
            (0, m) | (m, 0) => m,
            (s, m) if s == m => m,
            (s, m) => {
                return Err(FlameError::InvalidArgument(format!(
                    "slots ({s}) and max_executors ({m}) are the same limit; give one of them"
                )))
            }
        };
        if max != 0 && p.min_executors > max {
            return Err(FlameError::InvalidArgument(format!(
                "min_executors ({}) is more than max_executors ({max})",
                p.min_executors
            )));
        }
        // 0 is what an older client sends (the field did not exist): the default weight.
        let weight = if p.weight == 0.0 { 1.0 } else { p.weight };
        if !weight.is_finite() || weight <= 0.0 {
            return Err(FlameError::InvalidArgument(format!(
                "weight must be a finite number above 0, got {}",
                p.weight
            )));
        }
        Ok(Self {
            application: p.application,
            app_spec: p.app_spec,
            common_data: p.common_data,
            slots: max,
            max_retries: p.max_retries,
            timeout_secs: p.timeout_secs,
            priority: p.priority,
            python: p.python,
            owner: p.owner,
            weight,
            min_executors: p.min_executors,
            user: p.user,
        })
    }
}

impl From<SessionSpec> for proto::SessionSpec {
    fn from(s: SessionSpec) -> Self {
        Self {
            application: s.application,
            app_spec: s.app_spec,
            common_data: s.common_data,
            slots: s.slots,
            max_retries: s.max_retries,
            timeout_secs: s.timeout_secs,
            priority: s.priority,
            python: s.python,
            owner: s.owner,
            weight: s.weight,
            min_executors: s.min_executors,
            max_executors: s.slots,
            user: s.user,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApplicationRecord {
    pub name: String,
    pub spec: Bytes,
    pub description: String,
    pub created_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub spec: SessionSpec,
    pub state: SessionState,
    pub created_ms: i64,
    pub closed_ms: Option<i64>,
}

/// Counts of a session's tasks by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl TaskCounts {
    pub fn add(&mut self, state: TaskState, n: u64) {
        match state {
            TaskState::Pending => self.pending += n,
            TaskState::Running => self.running += n,
            TaskState::Succeeded => self.succeeded += n,
            TaskState::Failed => self.failed += n,
            TaskState::Cancelled => self.cancelled += n,
        }
    }

    pub fn remove(&mut self, state: TaskState, n: u64) {
        let slot = match state {
            TaskState::Pending => &mut self.pending,
            TaskState::Running => &mut self.running,
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
        };
        *slot = slot.saturating_sub(n);
    }

    /// Tasks in `state`.
    pub fn get(&self, state: TaskState) -> u64 {
        match state {
            TaskState::Pending => self.pending,
            TaskState::Running => self.running,
            TaskState::Succeeded => self.succeeded,
            TaskState::Failed => self.failed,
            TaskState::Cancelled => self.cancelled,
        }
    }

    /// Tasks in any state.
    pub fn total(&self) -> u64 {
        self.pending + self.running + self.succeeded + self.failed + self.cancelled
    }

    /// Tasks not yet finished.
    pub fn unfinished(&self) -> u64 {
        self.pending + self.running
    }
}

/// A task as stored: its input, and once finished its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub key: TaskKey,
    pub state: TaskState,
    pub input: Bytes,
    pub output: Bytes,
    pub error: Option<TaskFailure>,
    pub attempts: u32,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

impl TaskRecord {
    pub fn to_completion(&self) -> proto::TaskCompletion {
        proto::TaskCompletion {
            session_id: self.key.session.0,
            task_id: self.key.task.0,
            state: self.state.as_i32(),
            output: self.output.clone(),
            error: self.error.clone().map(Into::into),
            attempts: self.attempts,
            // Logs live in their own table (`Storage::get_task_log`); the caller adds it.
            log: String::new(),
            output_in_parts: false,
        }
    }
}

/// Shorthand for a task key.
pub fn key(session: SessionId, task: TaskId) -> TaskKey {
    TaskKey { session, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduling_options_are_checked_and_slots_is_max_executors() {
        let spec = |f: fn(&mut proto::SessionSpec)| {
            let mut p = proto::SessionSpec {
                application: "a".into(),
                ..Default::default()
            };
            f(&mut p);
            SessionSpec::try_from(p)
        };
        let old = spec(|p| p.slots = 3).unwrap();
        assert_eq!((old.slots, old.weight, old.min_executors), (3, 1.0, 0));
        assert_eq!(spec(|p| p.max_executors = 4).unwrap().slots, 4);
        let both = spec(|p| {
            p.slots = 4;
            p.max_executors = 4
        });
        assert_eq!(both.unwrap().slots, 4);
        let err = spec(|p| {
            p.slots = 2;
            p.max_executors = 4
        });
        assert!(err.unwrap_err().to_string().contains("same limit"));
        let err = spec(|p| {
            p.min_executors = 5;
            p.max_executors = 4
        });
        assert!(err.unwrap_err().to_string().contains("min_executors (5)"));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let mut p = proto::SessionSpec {
                application: "a".into(),
                weight: bad,
                ..Default::default()
            };
            p.weight = bad;
            let err = SessionSpec::try_from(p).unwrap_err().to_string();
            assert!(err.contains("weight"), "{err}");
        }
        let w = spec(|p| p.weight = 2.5).unwrap();
        assert_eq!(w.weight, 2.5);
        let back: proto::SessionSpec = w.into();
        assert_eq!((back.weight, back.max_executors), (2.5, 0));
    }

    #[test]
    fn final_states_do_not_move() {
        for s in [
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            assert!(s.is_final());
            for n in [TaskState::Pending, TaskState::Running, TaskState::Succeeded] {
                assert!(!s.can_move_to(n), "{s:?} -> {n:?}");
            }
        }
        assert!(TaskState::Running.can_move_to(TaskState::Pending));
        assert!(TaskState::Pending.can_move_to(TaskState::Cancelled));
    }

    #[test]
    fn state_names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::from_name(&s.name().to_uppercase()).unwrap(), s);
        }
        let err = TaskState::from_name("sleepy").unwrap_err().to_string();
        assert!(
            err.contains("'sleepy'") && err.contains("cancelled"),
            "{err}"
        );
    }

    #[test]
    fn state_round_trips_through_wire() {
        for s in [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            assert_eq!(TaskState::from_i32(s.as_i32()).unwrap(), s);
        }
        assert!(TaskState::from_i32(99).is_err());
    }

    #[test]
    fn spec_validation_names_the_problem() {
        let err = SessionSpec::try_from(proto::SessionSpec::default()).unwrap_err();
        assert!(err.to_string().contains("application"));
        let bad = proto::SessionSpec {
            application: "a".into(),
            timeout_secs: f64::NAN,
            ..Default::default()
        };
        assert!(SessionSpec::try_from(bad)
            .unwrap_err()
            .to_string()
            .contains("timeout"));
    }
}
