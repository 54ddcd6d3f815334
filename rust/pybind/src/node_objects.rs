//! `NodeObjects`: a process's link to the object store of the node it runs on, over the
//! node's Unix socket (`FLAME_NODE_SOCKET` for executors; `HelloReply.node_socket` for a
//! client of `flame-daemon start` or the embedded cluster). Python writes object files into
//! the node's memory dir itself (`flame._object_file`) and maps them from there; this only
//! tells the node about them (`seal`) and asks for missing ones (`pull`).

use std::time::Duration;

use pyo3::prelude::*;

use flame_core::client::node_objects::NodeObjects;
use flame_core::ids::ObjectId;

use crate::error::{err, to_py, About};
use crate::runtime::wait;

/// How long connecting to the socket may take (it is local: it answers or it is not there).
const CONNECT: Duration = Duration::from_secs(5);

#[pyclass(name = "NodeObjects", module = "flame._core", frozen)]
pub struct PyNodeObjects {
    inner: NodeObjects,
}

#[pymethods]
impl PyNodeObjects {
    /// Connects to the node's socket at `socket_path`.
    #[new]
    fn new(py: Python<'_>, socket_path: String) -> PyResult<Self> {
        let connect = async move {
            match tokio::time::timeout(CONNECT, NodeObjects::connect(&socket_path)).await {
                Ok(connected) => connected,
                Err(_) => Err(flame_core::FlameError::Timeout(format!(
                    "node object socket {socket_path} did not answer within {CONNECT:?}"
                ))),
            }
        };
        let inner = wait(py, connect)?.map_err(err)?;
        Ok(Self { inner })
    }

    /// The socket this talks to.
    #[getter]
    fn socket_path(&self) -> String {
        self.inner.path().display().to_string()
    }

    /// The node adopts `<memory dir>/<id>` (written with `flame._object_file.write_object`)
    /// as a primary object of `size` data bytes.
    fn seal(&self, py: Python<'_>, object_id: u64, size: u64) -> PyResult<()> {
        let client = self.inner.clone();
        wait(
            py,
            async move { client.seal(ObjectId(object_id), size).await },
        )?
        .map_err(|e| to_py(e, About::Object))
    }

    /// Makes these objects local (restored or fetched); `(id, size)` for each, in order.
    /// With `pin`, the node keeps them in place until `release` (the caller maps them).
    #[pyo3(signature = (object_ids, pin = false))]
    fn pull(&self, py: Python<'_>, object_ids: Vec<u64>, pin: bool) -> PyResult<Vec<(u64, u64)>> {
        let ids: Vec<ObjectId> = object_ids.into_iter().map(ObjectId).collect();
        let client = self.inner.clone();
        let pulled = wait(py, async move {
            if pin {
                client.pull_pinned(&ids).await
            } else {
                client.pull(&ids).await
            }
        })?
        .map_err(|e| to_py(e, About::Object))?;
        Ok(pulled.into_iter().map(|(id, size)| (id.0, size)).collect())
    }

    /// The caller has mapped these objects pulled with `pin`: the node may move them again.
    fn release(&self, py: Python<'_>, object_ids: Vec<u64>) -> PyResult<()> {
        let ids: Vec<ObjectId> = object_ids.into_iter().map(ObjectId).collect();
        let client = self.inner.clone();
        wait(py, async move { client.release(&ids).await })?.map_err(|e| to_py(e, About::Object))
    }
}
