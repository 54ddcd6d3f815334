//! Introspection answers as Python dicts: tasks (state, timings, placement, error without the
//! pickled payload) and executors. Used by `Connection.get_task` & co., i.e. the `flame` CLI.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use flame_core::model::TaskState;
use flame_core::proto;

/// A task state as the CLI spells it; `None` means "every state".
///
/// # Errors
/// `InvalidArgumentError` naming the accepted values.
pub fn parse_state(state: Option<&str>) -> PyResult<Option<TaskState>> {
    state
        .map(TaskState::from_name)
        .transpose()
        .map_err(crate::error::err)
}

/// `0` on the wire means "none" for times and ids.
fn opt(v: impl Into<i128> + Copy) -> Option<i128> {
    let n: i128 = v.into();
    (n != 0).then_some(n)
}

pub fn task_dict<'py>(py: Python<'py>, t: proto::TaskInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("session_id", t.session_id)?;
    d.set_item("task_id", t.task_id)?;
    d.set_item(
        "state",
        TaskState::from_i32(t.state).map_or("unknown", |s| s.name()),
    )?;
    d.set_item("attempts", t.attempts)?;
    d.set_item("created_ms", t.created_ms)?;
    d.set_item("started_ms", opt(t.started_ms))?;
    d.set_item("finished_ms", opt(t.finished_ms))?;
    d.set_item("executor_id", opt(t.executor_id))?;
    d.set_item("node_id", opt(t.node_id))?;
    d.set_item("output_bytes", t.output_bytes)?;
    let error = match t.error {
        Some(e) => {
            let ed = PyDict::new(py);
            let kind = proto::ErrorKind::try_from(e.kind)
                .map(|k| k.as_str_name().trim_start_matches("ERROR_").to_lowercase())
                .unwrap_or_else(|_| format!("unknown ({})", e.kind));
            ed.set_item("kind", kind)?;
            ed.set_item("message", e.message)?;
            ed.set_item("traceback", e.traceback)?;
            Some(ed)
        }
        None => None,
    };
    d.set_item("error", error)?;
    Ok(d)
}

pub fn executor_dict<'py>(py: Python<'py>, e: proto::ExecutorInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", e.id)?;
    d.set_item("node_id", e.node_id)?;
    d.set_item("state", e.state)?;
    d.set_item("session_id", opt(e.session_id))?;
    d.set_item("inflight", e.inflight)?;
    Ok(d)
}
