//! `LocalCluster`: the embedded head + node that `flame.init()` starts inside the client
//! process, on 127.0.0.1 with a free port. Executors are child processes of this process.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;

use flame_daemon::executor_manager::NodeConfig;
use flame_daemon::http::HttpPort;
use flame_daemon::local::LocalCluster;
use flame_daemon::server::HeadConfig;
use flame_daemon::session_manager::ManagerConfig;

use crate::error::err;
use crate::runtime::{runtime, wait};

#[pyclass(name = "LocalCluster", module = "flame._core", frozen)]
pub struct PyLocalCluster {
    address: String,
    dashboard_url: Option<String>,
    /// The head's admin token: only this process (and nobody it does not hand it to) holds
    /// it, so other local users cannot use the embedded cluster.
    token: String,
    inner: Mutex<Option<LocalCluster>>,
}

#[pymethods]
impl PyLocalCluster {
    #[new]
    #[pyo3(signature = (slots, state_dir, python, host = "127.0.0.1".to_string(), port = 0,
        max_payload_bytes = None, client_lease = None, release_delay = None, policies = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        slots: u32,
        state_dir: PathBuf,
        python: String,
        host: String,
        port: u16,
        max_payload_bytes: Option<usize>,
        client_lease: Option<f64>,
        release_delay: Option<f64>,
        policies: Option<Vec<String>>,
    ) -> PyResult<Self> {
        if slots == 0 {
            return Err(crate::error::InvalidArgumentError::new_err(
                "a local cluster needs at least one slot",
            ));
        }
        let seconds = |v: f64, what: &str| {
            Duration::try_from_secs_f64(v).map_err(|_| {
                crate::error::InvalidArgumentError::new_err(format!(
                    "{what} must be a non-negative number of seconds, got {v}"
                ))
            })
        };
        let mut manager = ManagerConfig::default();
        if let Some(b) = max_payload_bytes {
            if b == 0 || b > 1000 << 20 {
                return Err(crate::error::InvalidArgumentError::new_err(format!(
                    "max_payload_bytes must be between 1 and 1000 MiB, got {b}"
                )));
            }
            manager.max_payload_bytes = b;
        }
        if let Some(l) = client_lease {
            manager.client_lease = seconds(l, "client_lease")?;
        }
        if let Some(w) = release_delay {
            manager.release_delay = seconds(w, "release_delay")?;
        }
        if let Some(names) = policies {
            manager.policies = flame_core::scheduler::Policies::from_names(&names).map_err(err)?;
        }
        let head = HeadConfig {
            host,
            port,
            state_dir: state_dir.clone(),
            state_url: None,
            manager,
            // A free port: several embedded clusters (and a daemon) may share a machine.
            http: HttpPort::Exactly(0),
            tls: Default::default(),
            metrics_public: false,
        };
        let mut node = NodeConfig::new("");
        node.name = "local".into();
        node.slots = slots;
        node.python = python;
        node.work_dir = std::env::current_dir().unwrap_or(state_dir);
        let _guard = runtime().enter();
        let cluster = wait(py, LocalCluster::start(head, node))?.map_err(err)?;
        Ok(Self {
            address: cluster.address().to_string(),
            dashboard_url: cluster.head.dashboard_url.clone(),
            token: cluster.head.security.admin_token.to_string(),
            inner: Mutex::new(Some(cluster)),
        })
    }

    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// The admin token this process connects with (its executors get a node token).
    #[getter]
    fn token(&self) -> &str {
        &self.token
    }

    /// `http://127.0.0.1:PORT/`: the dashboard, `/metrics` and the JSON API.
    #[getter]
    fn dashboard_url(&self) -> Option<&str> {
        self.dashboard_url.as_deref()
    }

    /// Stop executors, the node and the head; idempotent.
    #[pyo3(signature = (grace = 5.0))]
    fn stop(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let Some(cluster) = self.inner.lock().ok().and_then(|mut g| g.take()) else {
            return Ok(());
        };
        let grace = Duration::from_secs_f64(grace.clamp(0.0, 600.0));
        let stopping = runtime().spawn(cluster.stop());
        // Ctrl-C must not leave executors behind: the stop keeps running on the runtime.
        let _ = wait(py, async move {
            tokio::time::timeout(grace + grace, stopping).await
        })?;
        Ok(())
    }

    fn __repr__(&self) -> String {
        // Never the token: reprs end up in logs.
        format!("LocalCluster(address={:?})", self.address)
    }
}
