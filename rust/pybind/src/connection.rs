//! `Connection`: the Python face of `flame_core::client::Client`, and `SessionInfo`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};

use flame_core::client::Client;
use flame_core::ids::{NodeId, ObjectId, SessionId, TaskId};
use flame_core::model::SessionSpec;
use flame_core::proto;

use crate::error::{err, to_py, About};
use crate::introspection;
use crate::runtime::wait;

/// Python bytes handed to Rust without a copy: the buffer stays owned by the bytes object.
pub fn to_bytes(b: PyBackedBytes) -> Bytes {
    Bytes::from_owner(b)
}

/// A task's error: (kind, message, traceback, payload).
type ErrorTuple = (i32, String, String, Py<PyBytes>);
/// One finished task: (session_id, task_id, state, output, error, attempts, log), where
/// error is an [`ErrorTuple`] or None, and log (what the task printed) is None when empty.
type CompletionTuple = (
    u64,
    u64,
    i32,
    Py<PyBytes>,
    Option<ErrorTuple>,
    u32,
    Option<String>,
);

#[pyclass(name = "SessionInfo", module = "flame._core", frozen, get_all)]
pub struct PySessionInfo {
    id: u64,
    application: String,
    state: &'static str,
    slots: u32,
    max_retries: u32,
    timeout: f64,
    priority: i32,
    weight: f64,
    min_executors: u32,
    user: String,
    pending: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    executors: u32,
    created_ms: i64,
    common_data: Py<PyBytes>,
}

#[pymethods]
impl PySessionInfo {
    fn __repr__(&self) -> String {
        format!(
            "SessionInfo(id={}, application={:?}, state={}, pending={}, running={}, succeeded={}, failed={}, cancelled={})",
            self.id, self.application, self.state, self.pending, self.running, self.succeeded,
            self.failed, self.cancelled
        )
    }
}

impl PySessionInfo {
    fn from_proto(py: Python<'_>, i: proto::SessionInfo) -> Self {
        let spec = i.spec.unwrap_or_default();
        let state = if i.state == proto::SessionState::SessionClosed as i32 {
            "closed"
        } else {
            "open"
        };
        Self {
            id: i.id,
            application: spec.application,
            state,
            slots: spec.slots,
            max_retries: spec.max_retries,
            timeout: spec.timeout_secs,
            priority: spec.priority,
            // An older daemon leaves the weight unset (0): it means the default, 1.
            weight: if spec.weight == 0.0 { 1.0 } else { spec.weight },
            min_executors: spec.min_executors,
            user: spec.user,
            pending: i.pending,
            running: i.running,
            succeeded: i.succeeded,
            failed: i.failed,
            cancelled: i.cancelled,
            executors: i.executors,
            created_ms: i.created_ms,
            common_data: PyBytes::new(py, &spec.common_data).unbind(),
        }
    }
}

#[pyclass(name = "Connection", module = "flame._core", frozen)]
pub struct PyConnection {
    client: Arc<Client>,
}

impl PyConnection {
    /// The unary stub, unless the daemon was found on another state: then every call fails
    /// at once with `ClusterStateLostError`, without reaching the daemon.
    fn frontend(&self) -> PyResult<flame_core::client::Frontend> {
        self.client.check_state().map_err(err)?;
        Ok(self.client.frontend())
    }
}

#[pymethods]
impl PyConnection {
    /// Connect with `token` and `ca_pem` (the cluster CA, PEM) if given, else those of the
    /// environment (`FLAME_TOKEN`, `FLAME_CA_FILE`, `FLAME_CERT_FILE` + `FLAME_KEY_FILE`).
    #[new]
    #[pyo3(signature = (address, timeout = 5.0, client_name = "", token = None, ca_pem = None))]
    fn new(
        py: Python<'_>,
        address: &str,
        timeout: f64,
        client_name: &str,
        token: Option<String>,
        ca_pem: Option<String>,
    ) -> PyResult<Self> {
        let timeout = crate::credentials::seconds(timeout)?;
        let creds = crate::credentials::credentials(token, ca_pem)?;
        let connect = Client::connect(address, &creds, timeout, client_name);
        let client = wait(py, connect)?.map_err(err)?;
        Ok(Self {
            client: Arc::new(client),
        })
    }

    #[getter]
    fn address(&self) -> &str {
        self.client.address()
    }

    /// The cluster CA this connection trusts (PEM; `None` for a plaintext head): given, or
    /// pinned by the token's fingerprint on connecting. `flame login` keeps it.
    #[getter]
    fn ca_pem(&self) -> Option<String> {
        self.client.ca_pem().map(str::to_string)
    }

    #[getter]
    fn client_id(&self) -> u32 {
        self.client.client_id().0
    }

    /// The identity of the head's state (a UUID; "" when the head has none).
    #[getter]
    fn state_id(&self) -> String {
        self.client.state_id().to_string()
    }

    #[getter]
    fn max_payload(&self) -> u64 {
        self.client.max_payload()
    }

    /// (node id, object socket) of the head's own node when this client is on its machine
    /// (`flame-daemon start`, the embedded cluster); else None.
    #[getter]
    fn local_node(&self) -> Option<(u64, String)> {
        self.client.local_node().map(|(id, s)| (id, s.to_string()))
    }

    /// A fresh id for an object this client makes.
    fn next_object_id(&self) -> PyResult<u64> {
        self.client.next_object_id().map(|id| id.0).map_err(err)
    }

    /// Object calls over this connection's channel.
    fn objects(&self) -> crate::objects::PyObjectClient {
        crate::objects::PyObjectClient::from_client(self.client.objects())
    }

    #[pyo3(signature = (name, spec, description = String::new()))]
    fn register_application(
        &self,
        py: Python<'_>,
        name: String,
        spec: PyBackedBytes,
        description: String,
    ) -> PyResult<()> {
        let mut fe = self.frontend()?;
        let app = proto::Application {
            name,
            spec: to_bytes(spec),
            description,
        };
        wait(py, fe.register_application(app))?.map_err(|s| err(s.into()))?;
        Ok(())
    }

    fn get_application(
        &self,
        py: Python<'_>,
        name: String,
    ) -> PyResult<(String, Py<PyBytes>, String)> {
        let mut fe = self.frontend()?;
        let a = wait(py, fe.get_application(proto::ApplicationRef { name }))?
            .map_err(|s| err(s.into()))?
            .into_inner();
        Ok((a.name, PyBytes::new(py, &a.spec).unbind(), a.description))
    }

    fn list_applications(&self, py: Python<'_>) -> PyResult<Vec<(String, Py<PyBytes>, String)>> {
        let mut fe = self.frontend()?;
        let list = wait(py, fe.list_applications(proto::Empty {}))?
            .map_err(|s| err(s.into()))?
            .into_inner();
        Ok(list
            .applications
            .into_iter()
            .map(|a| (a.name, PyBytes::new(py, &a.spec).unbind(), a.description))
            .collect())
    }

    #[pyo3(signature = (application, app_spec = None, common_data = None, slots = 0,
        max_retries = 3, timeout = 0.0, priority = 0, python = String::new(), weight = 1.0,
        min_executors = 0, user = String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn create_session(
        &self,
        py: Python<'_>,
        application: String,
        app_spec: Option<PyBackedBytes>,
        common_data: Option<PyBackedBytes>,
        slots: u32,
        max_retries: u32,
        timeout: f64,
        priority: i32,
        python: String,
        weight: f64,
        min_executors: u32,
        user: String,
    ) -> PyResult<PySessionInfo> {
        let spec = SessionSpec {
            application,
            app_spec: app_spec.map(to_bytes).unwrap_or_default(),
            common_data: common_data.map(to_bytes).unwrap_or_default(),
            slots,
            max_retries,
            timeout_secs: timeout,
            priority,
            python,
            // Sessions belong to the client that opens them: if it goes away for longer than
            // the daemon's client lease, they are closed.
            owner: self.client.client_id().0,
            weight,
            min_executors,
            user,
        };
        let mut fe = self.frontend()?;
        // From inside an executor, the session is tied to it (closed when its process ends).
        let req = flame_core::client::create_session_request(proto::CreateSessionRequest {
            spec: Some(spec.into()),
        });
        let info = wait(py, fe.create_session(req))?
            .map_err(|s| to_py(s.into(), About::Other))?
            .into_inner();
        Ok(PySessionInfo::from_proto(py, info))
    }

    fn get_session(&self, py: Python<'_>, session_id: u64) -> PyResult<PySessionInfo> {
        let mut fe = self.frontend()?;
        let info = wait(py, fe.get_session(proto::SessionRef { session_id }))?
            .map_err(|s| to_py(s.into(), About::Session))?
            .into_inner();
        Ok(PySessionInfo::from_proto(py, info))
    }

    fn list_sessions(&self, py: Python<'_>) -> PyResult<Vec<PySessionInfo>> {
        let mut fe = self.frontend()?;
        let list = wait(py, fe.list_sessions(proto::Empty {}))?
            .map_err(|s| err(s.into()))?
            .into_inner();
        Ok(list
            .sessions
            .into_iter()
            .map(|i| PySessionInfo::from_proto(py, i))
            .collect())
    }

    fn close_session(&self, py: Python<'_>, session_id: u64) -> PyResult<PySessionInfo> {
        let mut fe = self.frontend()?;
        let info = wait(py, fe.close_session(proto::SessionRef { session_id }))?
            .map_err(|s| to_py(s.into(), About::Session))?
            .into_inner();
        Ok(PySessionInfo::from_proto(py, info))
    }

    fn cluster_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut fe = self.frontend()?;
        let c = wait(py, fe.get_cluster_info(proto::Empty {}))?
            .map_err(|s| err(s.into()))?
            .into_inner();
        let d = PyDict::new(py);
        let nodes = c
            .nodes
            .into_iter()
            .map(|n| {
                let nd = PyDict::new(py);
                nd.set_item("id", n.id)?;
                nd.set_item("name", n.name)?;
                nd.set_item("slots", n.slots)?;
                nd.set_item("executors", n.executors)?;
                nd.set_item("busy", n.busy)?;
                nd.set_item("alive", n.alive)?;
                nd.set_item("address", n.address)?;
                nd.set_item("cpus", n.cpus)?;
                nd.set_item("memory_total", n.memory_total)?;
                nd.set_item("memory_available", n.memory_available)?;
                nd.set_item("draining", n.draining)?;
                Ok(nd)
            })
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("nodes", nodes)?;
        d.set_item("sessions_open", c.sessions_open)?;
        d.set_item("tasks_pending", c.tasks_pending)?;
        d.set_item("tasks_running", c.tasks_running)?;
        Ok(d)
    }

    fn get_task<'py>(
        &self,
        py: Python<'py>,
        session_id: u64,
        task_id: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut fe = self.frontend()?;
        let req = proto::TaskRef {
            session_id,
            task_id,
        };
        let t = wait(py, fe.get_task(req))?
            .map_err(|s| to_py(s.into(), About::Task))?
            .into_inner();
        introspection::task_dict(py, t)
    }

    /// A page of a session's tasks: `{"tasks": [...], "total": n}`.
    #[pyo3(signature = (session_id, state = None, limit = 100, offset = 0))]
    fn list_tasks<'py>(
        &self,
        py: Python<'py>,
        session_id: u64,
        state: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> PyResult<Bound<'py, PyDict>> {
        let state = introspection::parse_state(state)?;
        let req = proto::ListTasksRequest {
            session_id,
            state: state.map_or(0, |s| s.as_i32()),
            limit,
            offset,
        };
        let mut fe = self.frontend()?;
        let list = wait(py, fe.list_tasks(req))?
            .map_err(|s| to_py(s.into(), About::Session))?
            .into_inner();
        let tasks = list
            .tasks
            .into_iter()
            .map(|t| introspection::task_dict(py, t))
            .collect::<PyResult<Vec<_>>>()?;
        let d = PyDict::new(py);
        d.set_item("tasks", tasks)?;
        d.set_item("total", list.total)?;
        Ok(d)
    }

    /// A page of the objects on nodes (#12), in id order: `{"objects": [...], "total": n}`;
    /// each object: object_id, size, primary_node and copy_nodes (node ids; primary_node
    /// None when none is left), session_id and task_id of the task that made it (None: a put).
    #[pyo3(signature = (node_id = 0, limit = 100, offset = 0))]
    fn list_objects<'py>(
        &self,
        py: Python<'py>,
        node_id: u64,
        limit: u32,
        offset: u32,
    ) -> PyResult<Bound<'py, PyDict>> {
        let req = proto::ListObjectsRequest {
            node_id,
            limit,
            offset,
        };
        let mut fe = self.frontend()?;
        let list = wait(py, fe.list_objects(req))?
            .map_err(|s| err(s.into()))?
            .into_inner();
        let nonzero = |v: u64| (v != 0).then_some(v);
        let objects = list
            .objects
            .into_iter()
            .map(|o| {
                let d = PyDict::new(py);
                d.set_item("object_id", o.object_id)?;
                d.set_item("size", o.size)?;
                d.set_item("primary_node", nonzero(o.primary_node))?;
                d.set_item("copy_nodes", o.copy_nodes)?;
                d.set_item("session_id", nonzero(o.session_id))?;
                d.set_item("task_id", nonzero(o.task_id))?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        let d = PyDict::new(py);
        d.set_item("objects", objects)?;
        d.set_item("total", list.total)?;
        Ok(d)
    }

    fn list_executors<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let mut fe = self.frontend()?;
        let list = wait(py, fe.list_executors(proto::Empty {}))?
            .map_err(|s| err(s.into()))?
            .into_inner();
        list.executors
            .into_iter()
            .map(|e| introspection::executor_dict(py, e))
            .collect()
    }

    /// Cancel one task and wait for the daemon's answer (the task as it is then).
    fn cancel_task<'py>(
        &self,
        py: Python<'py>,
        session_id: u64,
        task_id: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut fe = self.frontend()?;
        let req = proto::TaskRef {
            session_id,
            task_id,
        };
        let t = wait(py, fe.cancel_task(req))?
            .map_err(|s| to_py(s.into(), About::Task))?
            .into_inner();
        introspection::task_dict(py, t)
    }

    /// Queue tasks (sent in batches in the background); returns their task ids.
    /// Queue tasks; `reads[i]` lists the objects ((id, size) pairs) task `i` reads.
    #[pyo3(signature = (session_id, inputs, reads = None))]
    fn submit(
        &self,
        session_id: u64,
        inputs: Vec<PyBackedBytes>,
        reads: Option<Vec<Vec<(u64, u64)>>>,
    ) -> PyResult<Vec<u64>> {
        let inputs = inputs.into_iter().map(to_bytes).collect();
        let reads = reads
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|(id, size)| (ObjectId(id), size))
                    .collect()
            })
            .collect();
        let ids = self
            .client
            .submit_reading(SessionId(session_id), inputs, reads)
            .map_err(err)?;
        Ok(ids.into_iter().map(|t| t.0).collect())
    }

    /// Tell the head that this client stored `objects` ((id, size) pairs) on node
    /// `node_id`; queued on the task stream ahead of later submissions.
    fn announce_objects(&self, node_id: u64, objects: Vec<(u64, u64)>) -> PyResult<()> {
        let objects: Vec<(ObjectId, u64)> = objects
            .into_iter()
            .map(|(id, size)| (ObjectId(id), size))
            .collect();
        self.client
            .announce_objects(NodeId(node_id), &objects)
            .map_err(err)
    }

    /// Announce one object whose pickle holds refs to `contains` (their ids): the head
    /// keeps them alive while this object lives.
    fn announce_container(
        &self,
        node_id: u64,
        object_id: u64,
        size: u64,
        contains: Vec<u64>,
    ) -> PyResult<()> {
        let contains: Vec<ObjectId> = contains.into_iter().map(ObjectId).collect();
        self.client
            .announce_container(NodeId(node_id), (ObjectId(object_id), size), &contains)
            .map_err(err)
    }

    fn cancel(&self, session_id: u64, task_id: u64) -> PyResult<()> {
        self.client
            .cancel(SessionId(session_id), TaskId(task_id))
            .map_err(err)
    }

    fn watch(&self, session_id: u64, task_ids: Vec<u64>) -> PyResult<()> {
        self.client
            .watch(
                SessionId(session_id),
                task_ids.into_iter().map(TaskId).collect(),
            )
            .map_err(err)
    }

    /// Completions that arrived, waiting up to `timeout` s; [] on timeout, None once closed.
    fn next_completions(
        &self,
        py: Python<'_>,
        timeout: f64,
    ) -> PyResult<Option<Vec<CompletionTuple>>> {
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::ZERO);
        let client = self.client.clone();
        let batch = wait(py, async move { client.next_completions(timeout).await })?;
        Ok(batch.map(|items| {
            items
                .into_iter()
                .map(|c| {
                    let error = c.error.map(|e| {
                        (
                            e.kind,
                            e.message,
                            e.traceback,
                            PyBytes::new(py, &e.payload).unbind(),
                        )
                    });
                    (
                        c.session_id,
                        c.task_id,
                        c.state,
                        PyBytes::new(py, &c.output).unbind(),
                        error,
                        c.attempts,
                        (!c.log.is_empty()).then_some(c.log),
                    )
                })
                .collect()
        }))
    }

    /// What a task printed; "" if nothing (or not finished yet).
    fn task_log(&self, py: Python<'_>, session_id: u64, task_id: u64) -> PyResult<String> {
        let mut fe = self.frontend()?;
        let req = proto::TaskRef {
            session_id,
            task_id,
        };
        let log = wait(py, fe.get_task_log(req))?
            .map_err(|s| to_py(s.into(), About::Task))?
            .into_inner();
        Ok(log.text)
    }

    fn close(&self) {
        self.client.close();
    }

    fn __repr__(&self) -> String {
        format!(
            "Connection(address={:?}, client_id={})",
            self.client.address(),
            self.client.client_id().0
        )
    }
}
