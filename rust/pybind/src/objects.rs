//! `ObjectClient`: objects for Python code that runs on no node of the cluster — stored on
//! the node the head picks and read from the nodes that hold them (#12) — and deleting
//! them through the head.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use flame_core::client::{normalize_address, ObjectClient};
use flame_core::ids::ObjectId;

use crate::connection::to_bytes;
use crate::error::{err, to_py, About, InvalidArgumentError};
use crate::runtime::wait;

/// The id of the object a task's large result is stored as (`ObjectId::result_of`).
#[pyfunction]
pub fn result_object_id(task_id: u64) -> u64 {
    ObjectId::result_of(flame_core::ids::TaskId(task_id)).0
}

#[pyclass(name = "ObjectClient", module = "flame._core", frozen)]
pub struct PyObjectClient {
    inner: ObjectClient,
}

impl PyObjectClient {
    pub fn from_client(inner: ObjectClient) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PyObjectClient {
    /// A channel to the head at `address` (no client id needed: executors use this), with
    /// `token` / `ca_pem` if given, else the environment's credentials.
    #[new]
    #[pyo3(signature = (address, timeout = 5.0, token = None, ca_pem = None))]
    fn new(
        py: Python<'_>,
        address: &str,
        timeout: f64,
        token: Option<String>,
        ca_pem: Option<String>,
    ) -> PyResult<Self> {
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|_| InvalidArgumentError::new_err(format!("bad timeout {timeout}")))?;
        let address = normalize_address(address);
        let creds = crate::credentials::credentials(token, ca_pem)?;
        let connect = ObjectClient::connect(&address, &creds, timeout);
        let inner = wait(py, connect)?.map_err(err)?;
        Ok(Self { inner })
    }

    /// Delete objects from every node holding them; unknown ids are ignored.
    fn delete(&self, py: Python<'_>, object_ids: Vec<u64>) -> PyResult<()> {
        let ids: Vec<ObjectId> = object_ids.into_iter().map(ObjectId).collect();
        let client = self.inner.clone();
        wait(py, async move { client.delete(&ids).await })?.map_err(err)
    }

    /// Store a new object on a node the head chooses (a process that runs on no node):
    /// `PlaceObject`, then the bytes go straight to that node. Announce it afterwards
    /// (`created` on the task stream) with the returned node.
    fn place_and_put(
        &self,
        py: Python<'_>,
        object_id: u64,
        parts: Vec<PyBackedBytes>,
    ) -> PyResult<PyPlacedObject> {
        let parts = parts.into_iter().map(to_bytes).collect();
        let client = self.inner.clone();
        let placed = wait(py, async move {
            client.place_and_put(ObjectId(object_id), parts).await
        })?
        .map_err(err)?;
        Ok(PyPlacedObject {
            node_id: placed.node_id,
            node_name: placed.node_name,
            size: placed.size,
        })
    }

    /// Read an object from the nodes that hold it (a process that runs on no node):
    /// `LocateObjects`, then a resumable fetch from the first holder that answers. An
    /// object being rebuilt is waited for up to `rebuild_wait` seconds.
    #[pyo3(signature = (object_id, rebuild_wait = 60.0))]
    fn locate_and_fetch<'py>(
        &self,
        py: Python<'py>,
        object_id: u64,
        rebuild_wait: f64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let wait_for = Duration::try_from_secs_f64(rebuild_wait).map_err(|_| {
            InvalidArgumentError::new_err(format!("bad rebuild_wait {rebuild_wait}"))
        })?;
        let client = self.inner.clone();
        let data = wait(py, async move {
            client.locate_and_fetch(ObjectId(object_id), wait_for).await
        })?
        .map_err(|e| to_py(e, About::Object))?;
        Ok(PyBytes::new(py, &data))
    }
}

/// Where `place_and_put` stored an object.
#[pyclass(name = "PlacedObject", module = "flame._core", frozen, get_all)]
pub struct PyPlacedObject {
    pub node_id: u64,
    pub node_name: String,
    pub size: u64,
}
