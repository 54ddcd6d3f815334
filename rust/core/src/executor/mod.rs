//! The executor loop: one executor process serving one session at a time for the session
//! manager.
//!
//! This module owns the *host side*: it receives commands (bind, task batches, unbind,
//! shutdown) in order and calls a [`ServiceHost`] on the calling thread — Python needs its
//! service code to run on the thread that holds the interpreter. The network side lives in
//! [`link`], on a private tokio runtime on a background thread, so a long task never stalls
//! the gRPC stream and commands sent ahead (prefetch) simply queue up behind it. A task that
//! waits on other tasks (a nested call) gives up its slot and the tasks queued behind it
//! meanwhile: see [`window`] and [`set_blocked`].

mod link;
pub mod orphan;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_link;
mod window;

pub use window::set_blocked;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::Credentials;
use crate::error::{FlameError, Result};
use crate::ids::{ExecutorId, ObjectId, SessionId, TaskId};
use crate::model::{ErrorKind, TaskFailure};
use crate::proto::{self, executor_command, executor_message};
use link::{Inbound, Link, Outbound};

/// Largest gRPC message the executor encodes or decodes. Task inputs and outputs travel
/// inside messages, so this bounds the size of a single task's payload.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// How long `run_executor` keeps trying to reach the session manager before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The executor this process runs (0: none); see [`process_executor`].
static PROCESS_EXECUTOR: AtomicU64 = AtomicU64::new(0);

/// The executor whose loop this process runs, if any: sessions its tasks open are tied to
/// it (`client::create_session_request`).
pub fn process_executor() -> Option<ExecutorId> {
    match PROCESS_EXECUTOR.load(Ordering::Relaxed) {
        0 => None,
        id => Some(ExecutorId(id)),
    }
}

/// What a service is given when an executor is bound to a session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionContext {
    pub session_id: SessionId,
    pub application: String,
    pub app_spec: Bytes,
    pub common_data: Bytes,
    /// A larger task result fails with `PayloadTooLarge` here, before it is sent; 0 = none.
    pub max_output_bytes: u64,
    /// A result whose frame is larger than this stays in the node's object store and
    /// travels by reference (see [`ServiceHost::take_output_object`]); 0 = always inline.
    pub result_object_bytes: u64,
}

/// The service an executor runs. Implemented by the Python binding (and by native test
/// executors); every method is called on the thread that called [`run_executor`].
pub trait ServiceHost {
    /// on_session_enter: load the service (e.g. unpickle the function / construct the class).
    fn enter(&mut self, ctx: &SessionContext) -> Result<(), TaskFailure>;
    /// Run one task of the bound session.
    fn invoke(
        &mut self,
        session: SessionId,
        task: TaskId,
        input: Bytes,
    ) -> Result<Bytes, TaskFailure>;
    /// on_session_leave
    fn leave(&mut self);
    /// What the last `invoke` printed, handed over once ("" if nothing). Called after
    /// every task; a host that captures no output keeps this default, which costs nothing.
    fn take_log(&mut self) -> String {
        String::new()
    }
    /// The object the last `invoke` stored its result as, with its size, handed over once:
    /// its output was then the small frame that refers to it. A host that never stores
    /// results keeps this default.
    fn take_output_object(&mut self) -> Option<(ObjectId, u64)> {
        None
    }
    /// The refs pickled inside the last `invoke`'s result, handed over once: the head keeps
    /// them alive while the result lives. A host whose results hold no refs keeps this.
    fn take_result_refs(&mut self) -> Vec<ObjectId> {
        Vec::new()
    }
}

/// Serves the session manager's Backend at `address` (e.g. `"http://127.0.0.1:4567"`) as
/// executor `executor_id` until it is told to shut down or the stream ends. Blocking: the
/// host runs on the calling thread, network I/O on a private background runtime. `creds`
/// are the node's (bearer node token, or its certificate and the CA: see
/// [`Credentials::from_env`]).
///
/// # Errors
/// [`FlameError::Unauthenticated`] if the head refuses the credentials;
/// [`FlameError::Unreachable`] if the stream cannot be opened within ~10 s, and
/// [`FlameError::ConnectionLost`] if it breaks; both name the address.
pub fn run_executor(
    address: &str,
    creds: &Credentials,
    executor_id: ExecutorId,
    host: &mut dyn ServiceHost,
) -> Result<()> {
    run_with_timeout(address, creds, executor_id, host, CONNECT_TIMEOUT, None)
}

/// [`run_executor`] for an executor that is a process of its own, started by a node: it dies
/// with its node and takes what its tasks started along, and it stops (even mid-task) within
/// [`orphan::ORPHAN_GRACE`] of losing its stream to the session manager. See [`orphan`].
///
/// # Errors
/// As [`run_executor`], and [`FlameError::Internal`] when the parent-death signal cannot be
/// set up.
pub fn run_executor_process(
    address: &str,
    creds: &Credentials,
    executor_id: ExecutorId,
    host: &mut dyn ServiceHost,
) -> Result<()> {
    orphan::guard()?;
    let grace = Some(orphan::ORPHAN_GRACE);
    run_with_timeout(address, creds, executor_id, host, CONNECT_TIMEOUT, grace)
}

/// `orphan_grace`: stop the process that long after the stream ends if the host is not done.
fn run_with_timeout(
    address: &str,
    creds: &Credentials,
    executor_id: ExecutorId,
    host: &mut dyn ServiceHost,
    connect_timeout: Duration,
    orphan_grace: Option<Duration>,
) -> Result<()> {
    let address = crate::client::normalize_address(address);
    let link = Link::open(&address, creds, executor_id, connect_timeout, orphan_grace)?;
    let _installed = link.window.install();
    PROCESS_EXECUTOR.store(executor_id.0, Ordering::Relaxed);
    let mut worker = Worker {
        host,
        link: &link,
        bound: None,
        max_output_bytes: 0,
        failed_enter: None,
    };
    let outcome = worker.serve(&address);
    // The host is done (and has left its session): flush what it sent, stop the network.
    link.close();
    outcome
}

/// A command from the session manager, checked at the edge.
enum Command {
    Bind(SessionContext),
    Tasks {
        session: SessionId,
        tasks: Vec<proto::TaskAssignment>,
    },
    Unbind(SessionId),
    Shutdown(String),
}

impl TryFrom<proto::ExecutorCommand> for Command {
    type Error = FlameError;

    fn try_from(c: proto::ExecutorCommand) -> Result<Self> {
        Ok(match c.msg {
            Some(executor_command::Msg::Bind(b)) => Command::Bind(SessionContext {
                session_id: SessionId(b.session_id),
                application: b.application,
                app_spec: b.app_spec,
                common_data: b.common_data,
                max_output_bytes: b.max_output_bytes,
                result_object_bytes: b.result_object_bytes,
            }),
            Some(executor_command::Msg::Tasks(t)) => Command::Tasks {
                session: SessionId(t.session_id),
                tasks: t.tasks,
            },
            Some(executor_command::Msg::Unbind(u)) => Command::Unbind(SessionId(u.session_id)),
            Some(executor_command::Msg::Shutdown(s)) => Command::Shutdown(s.reason),
            Some(executor_command::Msg::Ping(_)) => {
                return Err(FlameError::Internal(
                    "a heartbeat reached the host; the network thread answers those".into(),
                ))
            }
            None => {
                return Err(FlameError::InvalidArgument(
                    "executor command without a body".into(),
                ))
            }
        })
    }
}

/// The host-side state machine: unbound, bound to a session, or parked on a session whose
/// enter failed (so its tasks fail fast instead of reaching a half-loaded service).
struct Worker<'a> {
    host: &'a mut dyn ServiceHost,
    link: &'a Link,
    bound: Option<SessionId>,
    failed_enter: Option<(SessionId, TaskFailure)>,
    /// Limit on task results of the bound session (0 = none).
    max_output_bytes: u64,
}

impl Worker<'_> {
    fn serve(&mut self, address: &str) -> Result<()> {
        loop {
            let event = self.link.inbound.recv().map_err(|_| {
                FlameError::ConnectionLost(format!("{address}: executor network thread stopped"))
            });
            let outcome = match event {
                Ok(Inbound::Command(cmd)) => {
                    // Once the link is broken nothing can be reported, so queued work is
                    // skipped until the terminal event arrives.
                    if self.link.is_broken() {
                        continue;
                    }
                    match Command::try_from(cmd) {
                        Ok(Command::Shutdown(reason)) => {
                            tracing::debug!(%reason, "executor told to shut down");
                            Ok(())
                        }
                        Ok(cmd) => {
                            self.handle(cmd);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!("ignoring malformed command: {e}");
                            continue;
                        }
                    }
                }
                Ok(Inbound::Closed) => Ok(()),
                Ok(Inbound::Lost(e)) => Err(e),
                Err(e) => Err(e),
            };
            self.leave_if_bound();
            return outcome;
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Bind(ctx) => self.bind(ctx),
            Command::Tasks { session, tasks } => self.run_tasks(session, tasks),
            Command::Unbind(session) => {
                if self.bound == Some(session) {
                    self.leave_if_bound();
                } else if self
                    .failed_enter
                    .as_ref()
                    .is_some_and(|(s, _)| *s == session)
                {
                    self.failed_enter = None;
                } else {
                    tracing::debug!(%session, "unbind for a session this executor does not hold");
                }
                let left = proto::SessionLeft {
                    session_id: session.0,
                };
                self.link
                    .send(Outbound::Message(executor_message::Msg::Left(left)));
            }
            Command::Shutdown(_) => {}
        }
    }

    fn bind(&mut self, ctx: SessionContext) {
        if let Some(old) = self.bound {
            // The session manager unbinds before rebinding; if it did not, release the old
            // service rather than leak it, and say so.
            tracing::warn!(%old, new = %ctx.session_id, "bind while bound; leaving old session");
            self.leave_if_bound();
            let left = proto::SessionLeft { session_id: old.0 };
            self.link
                .send(Outbound::Message(executor_message::Msg::Left(left)));
        }
        self.failed_enter = None;
        self.max_output_bytes = ctx.max_output_bytes;
        let error = match self.host.enter(&ctx) {
            Ok(()) => {
                self.bound = Some(ctx.session_id);
                None
            }
            Err(mut failure) => {
                failure.kind = ErrorKind::ErrorSessionEnterFailed;
                self.failed_enter = Some((ctx.session_id, failure.clone()));
                Some(failure.into())
            }
        };
        let entered = proto::SessionEntered {
            session_id: ctx.session_id.0,
            error,
        };
        self.link
            .send(Outbound::Message(executor_message::Msg::Entered(entered)));
    }

    fn run_tasks(&mut self, session: SessionId, tasks: Vec<proto::TaskAssignment>) {
        for task in tasks {
            if self.link.is_broken() {
                return;
            }
            // Given back while an earlier task was blocked: it runs elsewhere.
            if !self.link.window.start(session.0, task.task_id) {
                continue;
            }
            let started = Instant::now();
            let outcome = if self.bound == Some(session) {
                self.host.invoke(session, TaskId(task.task_id), task.input)
            } else if let Some((_, failure)) =
                self.failed_enter.as_ref().filter(|(s, _)| *s == session)
            {
                Err(failure.clone())
            } else {
                Err(TaskFailure::new(
                    ErrorKind::ErrorInternal,
                    format!("executor is not bound to session {session}"),
                ))
            };
            // A wait the host left open ends with its task: the slot is taken back.
            if self.link.window.is_blocked() {
                self.link.window.set_blocked(false);
            }
            let log = self.host.take_log();
            let output_object =
                self.host
                    .take_output_object()
                    .map(|(id, size)| proto::ObjectStored {
                        object_id: id.0,
                        size,
                    });
            let contains: Vec<u64> = self
                .host
                .take_result_refs()
                .into_iter()
                .map(|id| id.0)
                .collect();
            // At least 1: 0 on the wire means "not measured".
            let run_us = u64::try_from(started.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let limit = self.max_output_bytes;
            let outcome = outcome.and_then(|output| {
                if limit > 0 && output.len() as u64 > limit {
                    Err(TaskFailure::new(
                        ErrorKind::ErrorPayloadTooLarge,
                        format!(
                            "task {} result is {} bytes; the daemon accepts at most {limit}",
                            task.task_id,
                            output.len()
                        ),
                    ))
                } else {
                    Ok(output)
                }
            });
            let result = match outcome {
                Ok(output) => proto::TaskResult {
                    session_id: session.0,
                    task_id: task.task_id,
                    ok: true,
                    output,
                    error: None,
                    log,
                    run_us,
                    output_in_parts: false,
                    output_object,
                    contains,
                },
                Err(failure) => proto::TaskResult {
                    session_id: session.0,
                    task_id: task.task_id,
                    ok: false,
                    output: Bytes::new(),
                    error: Some(failure.into()),
                    log,
                    run_us,
                    output_in_parts: false,
                    output_object: None,
                    contains: Vec::new(),
                },
            };
            // Sent per task: the link coalesces whatever has piled up, never waits for more.
            self.link.send(Outbound::Result(result));
        }
    }

    fn leave_if_bound(&mut self) {
        if self.bound.take().is_some() {
            self.host.leave();
        }
    }
}
