//! `run_executor`: the executor loop of `flame-core`, with a Python object as the service
//! host. The loop runs with the GIL released; each host call takes it for just that call.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyInt, PyTuple};

use flame_core::executor::{ServiceHost, SessionContext};
use flame_core::ids::{ExecutorId, ObjectId, SessionId, TaskId};
use flame_core::model::{ErrorKind, TaskFailure};

use crate::connection::to_bytes;
use crate::error::err;

/// A Python object with `enter`, `invoke` and `leave` (see `flame._worker`).
struct PyHost {
    obj: Py<PyAny>,
    /// What the last task printed, until the loop takes it.
    log: String,
    /// The object the last task's result was stored as (id, size), until the loop takes it.
    output_object: Option<(ObjectId, u64)>,
    /// The refs pickled inside the last task's result, until the loop takes them.
    result_refs: Vec<ObjectId>,
}

/// `(kind, message, traceback, payload[, retryable])` from the host → a classified failure.
fn failure_from(t: &Bound<'_, PyAny>) -> TaskFailure {
    let parsed: PyResult<(i32, String, String, PyBackedBytes, bool)> = t
        .extract()
        .or_else(|_| t.extract().map(|(k, m, tb, p)| (k, m, tb, p, false)));
    match parsed {
        Ok((kind, message, traceback, payload, retryable)) => TaskFailure {
            kind: ErrorKind::try_from(kind).unwrap_or(ErrorKind::ErrorInternal),
            message,
            traceback,
            payload: to_bytes(payload),
            retryable,
        },
        Err(e) => TaskFailure::new(
            ErrorKind::ErrorInternal,
            format!("the executor's host returned a malformed error: {e}"),
        ),
    }
}

/// An exception that escaped the host itself (a bug in flame, not in user code).
fn host_error(py: Python<'_>, e: PyErr, what: &str) -> TaskFailure {
    let tb = e
        .traceback(py)
        .and_then(|t| t.format().ok())
        .unwrap_or_default();
    let mut f = TaskFailure::new(ErrorKind::ErrorInternal, format!("{what} failed: {e}"));
    f.traceback = tb;
    f
}

impl ServiceHost for PyHost {
    fn enter(&mut self, ctx: &SessionContext) -> Result<(), TaskFailure> {
        Python::attach(|py| {
            let args = (
                ctx.session_id.0,
                ctx.application.as_str(),
                PyBytes::new(py, &ctx.app_spec),
                PyBytes::new(py, &ctx.common_data),
                // The result limit, checked while serializing (0 = none).
                ctx.max_output_bytes,
                // Larger results stay in the node's object store (0 = never).
                ctx.result_object_bytes,
            );
            match self.obj.bind(py).call_method1("enter", args) {
                Ok(r) if r.is_none() => Ok(()),
                Ok(r) => {
                    let mut f = failure_from(&r);
                    f.kind = ErrorKind::ErrorSessionEnterFailed;
                    Err(f)
                }
                Err(e) => Err(host_error(py, e, "on_session_enter")),
            }
        })
    }

    fn invoke(
        &mut self,
        _session: SessionId,
        task: TaskId,
        input: Bytes,
    ) -> Result<Bytes, TaskFailure> {
        Python::attach(|py| {
            let args = (task.0, PyBytes::new(py, &input));
            let r = match self.obj.bind(py).call_method1("invoke", args) {
                Ok(r) => r,
                Err(e) => return Err(host_error(py, e, "invoking the task")),
            };
            // Bytes: a silent success (the hot path, checked first). A 2-tuple: the outcome
            // paired with what the task printed. Any other tuple: an error tuple.
            let r = match r.cast::<PyTuple>() {
                Ok(t) if t.len() == 2 => {
                    let (outcome, log): (Bound<'_, PyAny>, String) = match t.extract() {
                        Ok(pair) => pair,
                        Err(e) => return Err(host_error(py, e, "reading the task log")),
                    };
                    self.log = log;
                    outcome
                }
                _ => r,
            };
            if let Ok(t) = r.cast::<PyTuple>() {
                // (frame, object id, size): the result stayed in the node's store.
                if t.len() == 3 {
                    let (frame, id, size): (PyBackedBytes, u64, u64) = match t.extract() {
                        Ok(stored) => stored,
                        Err(e) => return Err(host_error(py, e, "reading a stored result")),
                    };
                    self.output_object = Some((ObjectId(id), size));
                    return Ok(to_bytes(frame));
                }
                // (frame, object id or 0 if inline, size, refs inside): a result holding
                // refs (an error tuple starts with its kind, an int, not the frame).
                if t.len() == 4 && t.get_item(0).is_ok_and(|f| !f.is_instance_of::<PyInt>()) {
                    let (frame, id, size, refs): (PyBackedBytes, u64, u64, Vec<u64>) =
                        match t.extract() {
                            Ok(r) => r,
                            Err(e) => return Err(host_error(py, e, "reading a result's refs")),
                        };
                    if id != 0 {
                        self.output_object = Some((ObjectId(id), size));
                    }
                    self.result_refs = refs.into_iter().map(ObjectId).collect();
                    return Ok(to_bytes(frame));
                }
                return Err(failure_from(&r));
            }
            match r.extract::<PyBackedBytes>() {
                Ok(b) => Ok(to_bytes(b)),
                Err(e) => Err(host_error(py, e.into(), "reading the task result")),
            }
        })
    }

    fn take_log(&mut self) -> String {
        std::mem::take(&mut self.log)
    }

    fn take_output_object(&mut self) -> Option<(ObjectId, u64)> {
        self.output_object.take()
    }

    fn take_result_refs(&mut self) -> Vec<ObjectId> {
        std::mem::take(&mut self.result_refs)
    }

    fn leave(&mut self) {
        Python::attach(|py| {
            if let Err(e) = self.obj.bind(py).call_method0("leave") {
                tracing::warn!(error = %e, "on_session_leave raised");
                e.print(py);
            }
        })
    }
}

/// Run the executor loop until the session manager says stop or the link is lost, as the
/// executor process of a node: it dies with the node (see `flame_core::executor::orphan`).
#[pyfunction]
pub fn run_executor(
    py: Python<'_>,
    address: String,
    executor_id: u64,
    host: Py<PyAny>,
) -> PyResult<()> {
    let mut host = PyHost {
        obj: host,
        log: String::new(),
        output_object: None,
        result_refs: Vec::new(),
    };
    // The node's credentials, handed down through the environment.
    let creds = flame_core::client::Credentials::from_env().map_err(err)?;
    py.detach(|| {
        flame_core::executor::run_executor_process(
            &address,
            &creds,
            ExecutorId(executor_id),
            &mut host,
        )
    })
    .map_err(err)
}

/// The running task of this process's executor starts (`True`) or stops (`False`) waiting
/// on other tasks; `False` when this process runs no executor loop. See `flame._blocking`.
#[pyfunction]
pub fn executor_blocked(blocked: bool) -> bool {
    flame_core::executor::set_blocked(blocked)
}
