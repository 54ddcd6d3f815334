//! Credentials from Python (#11): what `flame.connect(token=, ca=)` and the credential lookup
//! of `flame._credentials` hand down, on top of the environment (`FLAME_TOKEN`,
//! `FLAME_CA_FILE`, `FLAME_CERT_FILE` + `FLAME_KEY_FILE`: what a node gives its executors);
//! and `discover`, the one call a client makes before it has credentials.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use flame_core::client::{normalize_address, Credentials};

use crate::error::{err, InvalidArgumentError};
use crate::runtime::wait;

/// The environment's credentials with the explicit `token` / `ca_pem` in their place.
pub fn credentials(token: Option<String>, ca_pem: Option<String>) -> PyResult<Credentials> {
    let mut creds = Credentials::from_env().map_err(err)?;
    if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
        creds.token = Some(t.trim().to_string());
    }
    if let Some(ca) = ca_pem.filter(|c| !c.trim().is_empty()) {
        creds.ca_pem = Some(ca);
    }
    Ok(creds)
}

pub fn seconds(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout)
        .map_err(|_| InvalidArgumentError::new_err(format!("bad timeout {timeout}")))
}

/// Ask the head at `address` what it is, without credentials: a dict with `tls`,
/// `ca_fingerprint`, `state_dir` (only when this process is on the head's machine) and
/// `version`.
#[pyfunction]
#[pyo3(signature = (address, timeout = 5.0, ca_pem = None))]
pub fn discover<'py>(
    py: Python<'py>,
    address: &str,
    timeout: f64,
    ca_pem: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let timeout = seconds(timeout)?;
    let creds = Credentials {
        ca_pem,
        ..Credentials::none()
    };
    let address = normalize_address(address);
    let found = wait(py, async move {
        flame_core::client::discover(&address, &creds, timeout).await
    })?
    .map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("tls", found.tls)?;
    d.set_item("ca_fingerprint", found.ca_fingerprint)?;
    d.set_item("state_dir", found.state_dir)?;
    d.set_item("version", found.version)?;
    Ok(d)
}
