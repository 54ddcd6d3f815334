//! The executor's own record of the tasks sent ahead to it (its window) and whether its
//! running task is blocked in a nested wait.
//!
//! A task that waits on other tasks of its cluster (`flame.get`, `Future.result()`,
//! `await`) would hold its slot while the tasks it waits for cannot be placed: with every
//! slot held by a waiting parent, nothing progresses. So while it waits the executor says
//! `Blocked` (the session manager then stops counting it against its node's slots and its
//! session, and may start another executor in its place) and `Unblocked` when the wait ends.
//!
//! Tasks queued behind the blocked one must not wait for it: on blocking, every task
//! received and not started is given back (`TasksReturned`), and so is every task that
//! arrives while blocked. Whether a task runs here or goes back is decided in one place,
//! under one lock: the network thread records a task as it arrives, the host thread takes
//! it off the record before it runs it, and a task no longer on the record (given back) is
//! skipped. So no task is both run here and given back, and none is lost.
//!
//! The lock is taken once per task batch on the network thread and once per task on the
//! host thread, never across a wait; sends are to an unbounded channel (never block).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::link::Outbound;
use crate::proto::{self, executor_command, executor_message};

thread_local! {
    /// The window of the executor loop running on this thread (the host thread, which also
    /// runs the tasks): what [`set_blocked`] reports to. Per thread, so that only the
    /// task's own waits count, and executors in one test process stay apart.
    static CURRENT: RefCell<Option<Arc<Window>>> = const { RefCell::new(None) };
}

/// Tell the session manager that the task running on this thread starts (`true`) or stops
/// (`false`) waiting on other tasks. Repeating the current state does nothing. Returns
/// `false` when no executor loop runs on this thread (a plain client, another thread).
pub fn set_blocked(blocked: bool) -> bool {
    let current = CURRENT.with(|c| c.borrow().clone());
    match current {
        Some(window) => {
            window.set_blocked(blocked);
            true
        }
        None => false,
    }
}

#[derive(Default)]
struct State {
    blocked: bool,
    /// (session, task) received and not started, in arrival order (= run order).
    received: VecDeque<(u64, u64)>,
}

pub(super) struct Window {
    state: Mutex<State>,
    /// Weak: the link's writer must still end when the host drops its sender.
    out: mpsc::WeakUnboundedSender<Outbound>,
}

impl Window {
    pub(super) fn new(out: &mpsc::UnboundedSender<Outbound>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            out: out.downgrade(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the record half-changed: each change is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, msg: executor_message::Msg) {
        if let Some(tx) = self.out.upgrade() {
            let _ = tx.send(Outbound::Message(msg));
        }
    }

    /// Make this the window [`set_blocked`] reports to, until the guard is dropped.
    pub(super) fn install(self: &Arc<Self>) -> Installed {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        Installed
    }

    /// Network thread, for each command: `false` when it must not reach the host (a task
    /// batch that arrived while blocked; it was given back instead).
    pub(super) fn arrived(&self, cmd: &proto::ExecutorCommand) -> bool {
        let Some(executor_command::Msg::Tasks(batch)) = &cmd.msg else {
            return true;
        };
        let mut state = self.lock();
        if state.blocked {
            let returned = proto::TasksReturned {
                session_id: batch.session_id,
                task_ids: batch.tasks.iter().map(|t| t.task_id).collect(),
            };
            self.send(executor_message::Msg::Returned(returned));
            return false;
        }
        let sid = batch.session_id;
        state
            .received
            .extend(batch.tasks.iter().map(|t| (sid, t.task_id)));
        true
    }

    /// Host thread, before running a task: `false` if it was given back (skip it).
    pub(super) fn start(&self, session: u64, task: u64) -> bool {
        let mut state = self.lock();
        let key = (session, task);
        // Tasks start in arrival order, so this is the front unless some were given back.
        if state.received.front() == Some(&key) {
            state.received.pop_front();
            return true;
        }
        match state.received.iter().position(|k| *k == key) {
            Some(i) => {
                state.received.remove(i);
                true
            }
            None => false,
        }
    }

    /// The running task starts or stops waiting. Blocking gives back every task not
    /// started, after the `Blocked` message (the same channel keeps them in order).
    pub(super) fn set_blocked(&self, blocked: bool) {
        let mut state = self.lock();
        if state.blocked == blocked {
            return;
        }
        state.blocked = blocked;
        if !blocked {
            self.send(executor_message::Msg::Unblocked(
                proto::ExecutorUnblocked {},
            ));
            return;
        }
        self.send(executor_message::Msg::Blocked(proto::ExecutorBlocked {}));
        let mut returned: Vec<proto::TasksReturned> = Vec::new();
        for (sid, tid) in state.received.drain(..) {
            match returned.last_mut() {
                Some(r) if r.session_id == sid => r.task_ids.push(tid),
                _ => returned.push(proto::TasksReturned {
                    session_id: sid,
                    task_ids: vec![tid],
                }),
            }
        }
        for r in returned {
            self.send(executor_message::Msg::Returned(r));
        }
    }

    pub(super) fn is_blocked(&self) -> bool {
        self.lock().blocked
    }
}

/// Uninstalls the process's window when the executor loop ends.
pub(super) struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}
