//! `flame._core`: the thin PyO3 layer. Bodies extract arguments, call `flame-core` or
//! `flame-daemon`, and map errors; the user-facing API is Python code in `python/flame`.
//!
//! # Layout
//! - [`runtime`] — the one tokio runtime of the process and the GIL-releasing wait helper.
//! - [`error`] — `FlameError` → the exception classes of `flame.errors`, in one table.
//! - [`connection`] — `Connection` (client) and `SessionInfo`.
//! - [`credentials`] — credentials from Python and the environment; `discover`.
//! - [`introspection`] — task and executor views as dicts, for the `flame` CLI.
//! - [`objects`] — `ObjectClient`: objects over gRPC for code not on the head's machine.
//! - [`node_objects`] — `NodeObjects`: seal and pull through the local node's Unix socket.
//! - [`cluster`] — `LocalCluster`, the embedded head + node of `flame.init()`.
//! - [`executor`] — `run_executor`: the executor loop calling a Python service host.
//! - `daemon_main` — the `flame-daemon` console script.

mod cluster;
mod connection;
mod credentials;
mod error;
mod executor;
mod introspection;
mod node_objects;
mod objects;
mod runtime;

use pyo3::prelude::*;

/// Run the `flame-daemon` command line with `argv`; returns the exit code.
#[pyfunction]
fn daemon_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    // The daemon handles SIGINT/SIGTERM itself; Python code does not run meanwhile.
    py.detach(|| flame_daemon::cli::main_with_args(argv))
}

/// Send the Rust side's logs (embedded cluster, client) to stderr, filtered like RUST_LOG
/// (`"warn"`, `"info"`, `"flame_daemon=debug"`); only the first call takes effect.
#[pyfunction]
#[pyo3(signature = (filter, json = false))]
fn init_logging(filter: &str, json: bool) {
    flame_daemon::cli::init_logging_with(filter, if json { "json" } else { "text" });
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<connection::PyConnection>()?;
    m.add_class::<connection::PySessionInfo>()?;
    m.add_class::<cluster::PyLocalCluster>()?;
    m.add_class::<objects::PyObjectClient>()?;
    m.add_class::<node_objects::PyNodeObjects>()?;
    m.add_class::<objects::PyPlacedObject>()?;
    m.add_function(wrap_pyfunction!(executor::run_executor, m)?)?;
    m.add_function(wrap_pyfunction!(executor::executor_blocked, m)?)?;
    m.add_function(wrap_pyfunction!(credentials::discover, m)?)?;
    m.add_function(wrap_pyfunction!(daemon_main, m)?)?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    m.add_function(wrap_pyfunction!(objects::result_object_id, m)?)?;
    Ok(())
}
