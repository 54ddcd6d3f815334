//! What introspection (the `flame` CLI, the dashboard) shows of a task: its state, timings,
//! where it ran and how it failed — never its input or output payloads. Storage answers
//! finished tasks with a [`TaskView`]; the session manager overlays what only memory knows
//! about unfinished ones (running, on which executor, since when) with [`TaskView::overlay`].

use crate::ids::{ExecutorId, NodeId, TaskKey};
use crate::model::{TaskFailure, TaskState};
use crate::proto;

/// Largest page of tasks one list call answers.
pub const MAX_PAGE: u32 = 1000;
/// The page size when the caller asks for none.
pub const DEFAULT_PAGE: u32 = 100;

#[derive(Clone, Debug, PartialEq)]
pub struct TaskView {
    pub key: TaskKey,
    pub state: TaskState,
    pub attempts: u32,
    /// When the daemon accepted it.
    pub created_ms: i64,
    /// When its last attempt was sent to an executor.
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Executor (and its node) of the last attempt.
    pub ran_on: Option<(ExecutorId, NodeId)>,
    /// The failure, with an empty payload (a pickled exception is no use to a reader).
    pub error: Option<TaskFailure>,
    pub output_bytes: u64,
}

/// What memory knows of a running task, laid over its stored (pending) row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveTask {
    pub attempts: u32,
    pub started_ms: i64,
    pub ran_on: (ExecutorId, NodeId),
}

impl TaskView {
    /// A stored row says "pending" for a task that is running right now: memory knows better.
    pub fn overlay(&mut self, live: &LiveTask) {
        if self.state.is_final() {
            return;
        }
        self.state = TaskState::Running;
        self.attempts = live.attempts;
        self.started_ms = Some(live.started_ms);
        self.ran_on = Some(live.ran_on);
    }
}

impl From<TaskView> for proto::TaskInfo {
    fn from(v: TaskView) -> Self {
        let (executor, node) = v.ran_on.map_or((0, 0), |(e, n)| (e.0, n.0));
        Self {
            session_id: v.key.session.0,
            task_id: v.key.task.0,
            state: v.state.as_i32(),
            attempts: v.attempts,
            created_ms: v.created_ms,
            started_ms: v.started_ms.unwrap_or(0),
            finished_ms: v.finished_ms.unwrap_or(0),
            executor_id: executor,
            node_id: node,
            error: v.error.map(Into::into),
            output_bytes: v.output_bytes,
        }
    }
}

/// Check a requested page size: 0 means the default, more than [`MAX_PAGE`] is refused.
///
/// # Errors
/// `InvalidArgument` naming the limit when `limit` is over [`MAX_PAGE`].
pub fn page_size(limit: u32) -> crate::Result<u32> {
    match limit {
        0 => Ok(DEFAULT_PAGE),
        n if n > MAX_PAGE => Err(crate::FlameError::InvalidArgument(format!(
            "limit is {n}; at most {MAX_PAGE} tasks are listed per call (use offset to page)"
        ))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SessionId, TaskId};

    fn pending() -> TaskView {
        TaskView {
            key: TaskKey {
                session: SessionId(1),
                task: TaskId(2),
            },
            state: TaskState::Pending,
            attempts: 0,
            created_ms: 10,
            started_ms: None,
            finished_ms: None,
            ran_on: None,
            error: None,
            output_bytes: 0,
        }
    }

    #[test]
    fn overlay_marks_a_stored_pending_task_running() {
        let mut v = pending();
        let live = LiveTask {
            attempts: 2,
            started_ms: 20,
            ran_on: (ExecutorId(5), NodeId(3)),
        };
        v.overlay(&live);
        assert_eq!(v.state, TaskState::Running);
        assert_eq!((v.attempts, v.started_ms), (2, Some(20)));
        let info = proto::TaskInfo::from(v);
        assert_eq!((info.executor_id, info.node_id), (5, 3));
    }

    #[test]
    fn overlay_never_revives_a_finished_task() {
        let mut v = pending();
        v.state = TaskState::Succeeded;
        v.overlay(&LiveTask {
            attempts: 9,
            started_ms: 1,
            ran_on: (ExecutorId(1), NodeId(1)),
        });
        assert_eq!((v.state, v.attempts), (TaskState::Succeeded, 0));
    }

    #[test]
    fn page_size_defaults_and_bounds() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_size(7).unwrap(), 7);
        let err = page_size(MAX_PAGE + 1).unwrap_err().to_string();
        assert!(err.contains("at most 1000"), "{err}");
    }
}
