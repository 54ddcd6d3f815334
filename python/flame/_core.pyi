# Types of the native module `flame._core` (built from rust/pybind). Types only: the
# user-facing API and its documentation live in the Python modules of `flame`.
#
# Wire conventions shared with the Rust side:
#   task states : 1 PENDING, 2 RUNNING, 3 SUCCEEDED, 4 FAILED, 5 CANCELLED
#   error kinds : 1 USER_EXCEPTION, 2 EXECUTOR_LOST, 3 TIMEOUT, 4 CANCELLED,
#                 5 SESSION_ENTER_FAILED, 6 SESSION_NOT_FOUND, 7 SESSION_CLOSED,
#                 8 PAYLOAD_TOO_LARGE, 9 INVALID_ARGUMENT, 10 INTERNAL,
#                 11 STORAGE_UNAVAILABLE
# Errors raised by this module are the classes of `flame.errors` (ConnectionError,
# SessionError, InvalidArgumentError, PayloadTooLargeError, FlameError).
#
# pyo3 classes are built by `__new__` (there is no `__init__`), cannot be subclassed
# (`@final`, which implies a disjoint base): the stub says so, and
# `python -m mypy.stubtest flame._core --allowlist python/flame/_core.stubtest-allow` checks
# it against the built module in CI (.ci/run). Defaults shown as `...` are Rust values
# (`String::new()`, `"127.0.0.1".to_string()`) the binding's text signature cannot spell.

from typing import Any, Protocol, final

__all__ = [
    "__version__",
    "Connection",
    "SessionInfo",
    "LocalCluster",
    "ObjectClient",
    "NodeObjects",
    "PlacedObject",
    "run_executor",
    "executor_blocked",
    "discover",
    "daemon_main",
    "init_logging",
    "result_object_id",
]

# (kind, message, traceback, payload)
ErrorTuple = tuple[int, str, str, bytes]
# (kind, message, traceback, payload, retryable): what a task's failure may also say
TaskErrorTuple = tuple[int, str, str, bytes, bool]
# (frame, object id, size): a task result that stayed in the node's object store
StoredResult = tuple[bytes, int, int]
# A result holding refs: (frame, stored object id or 0 if inline, size, ids of the refs).
RefsResult = tuple[bytes, int, int, list[int]]
# What ServiceHost.invoke returns: the outcome, paired with the task's log when it printed.
Outcome = bytes | StoredResult | RefsResult | ErrorTuple | TaskErrorTuple
InvokeResult = Outcome | tuple[Outcome, str]
# (session_id, task_id, state, output, error, attempts, log); log is None when empty
Completion = tuple[int, int, int, bytes, ErrorTuple | None, int, str | None]

@final
class SessionInfo:
    id: int
    application: str
    state: str  # "open" | "closed"
    slots: int
    max_retries: int
    timeout: float
    priority: int
    weight: float
    min_executors: int
    user: str
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    executors: int
    created_ms: int
    common_data: bytes

@final
class Connection:
    """A client connection: unary calls plus one stream for task batches."""

    address: str
    client_id: int
    state_id: str
    max_payload: int  # largest task input/output the daemon accepts; 0 = no limit
    ca_pem: str | None  # the cluster CA (PEM) this connection trusts; None without TLS
    def __new__(
        cls,
        address: str,
        timeout: float = 5.0,
        client_name: str = "",
        token: str | None = None,
        ca_pem: str | None = None,
    ) -> Connection:
        """Connect with ``token`` and ``ca_pem`` if given, else those of the environment
        (``FLAME_TOKEN``, ``FLAME_CA_FILE``, ``FLAME_CERT_FILE`` + ``FLAME_KEY_FILE``)."""
    def register_application(self, name: str, spec: bytes, description: str = ...) -> None: ...
    def get_application(self, name: str) -> tuple[str, bytes, str]: ...
    def list_applications(self) -> list[tuple[str, bytes, str]]: ...
    def create_session(
        self,
        application: str,
        app_spec: bytes | None = None,
        common_data: bytes | None = None,
        slots: int = 0,
        max_retries: int = 3,
        timeout: float = 0.0,
        priority: int = 0,
        python: str = ...,  # "" (the daemon's default interpreter)
        weight: float = 1.0,
        min_executors: int = 0,
        user: str = ...,  # ""
    ) -> SessionInfo: ...
    def get_session(self, session_id: int) -> SessionInfo: ...
    def list_sessions(self) -> list[SessionInfo]: ...
    def close_session(self, session_id: int) -> SessionInfo: ...
    def cluster_info(self) -> dict[str, object]: ...
    # Introspection. A task dict: session_id, task_id, state ("pending" | "running" |
    # "succeeded" | "failed" | "cancelled"), attempts, created_ms, started_ms, finished_ms,
    # executor_id, node_id (None when unknown), output_bytes, error (None or a dict of kind,
    # message, traceback). Unknown tasks raise NotFoundError.
    def get_task(self, session_id: int, task_id: int) -> dict[str, Any]: ...
    def list_tasks(
        self, session_id: int, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """A page of tasks in task-id order: {"tasks": [task dicts], "total": n}; limit <= 1000."""
    def list_objects(self, node_id: int = 0, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        """A page of objects on nodes: {"objects": [object dicts], "total": n}; limit <= 1000."""
    def list_executors(self) -> list[dict[str, Any]]:
        """Executors: id, node_id, state, session_id (None if unbound), inflight."""
    def cancel_task(self, session_id: int, task_id: int) -> dict[str, Any]:
        """Cancel a task and answer it; a finished task raises InvalidArgumentError."""
    def submit(
        self,
        session_id: int,
        inputs: list[bytes],
        reads: list[list[tuple[int, int]]] | None = None,
    ) -> list[int]:
        """Queue tasks for sending (batched in the background); returns their task ids.
        ``reads[i]``: (id, size) of the objects task ``i`` reads."""
    def announce_objects(self, node_id: int, objects: list[tuple[int, int]]) -> None:
        """Tell the head (on the task stream, ahead of later tasks) that this client stored
        these (id, size) objects on node ``node_id``."""
    def announce_container(
        self, node_id: int, object_id: int, size: int, contains: list[int]
    ) -> None:
        """Announce one object whose pickle holds refs to ``contains`` (their ids): the head
        keeps them alive while this object lives."""
    def cancel(self, session_id: int, task_id: int) -> None: ...
    def watch(self, session_id: int, task_ids: list[int]) -> None:
        """Route completions of these tasks to this connection (finished ones come at once)."""
    def next_completions(self, timeout: float) -> list[Completion] | None:
        """Completions that arrived, waiting up to `timeout` s; [] on timeout, None once closed."""
    def task_log(self, session_id: int, task_id: int) -> str:
        """What the task printed; "" if nothing (yet). NOT_FOUND error for an unknown task."""
    def close(self) -> None: ...
    @property
    def local_node(self) -> tuple[int, str] | None:
        """(node id, object socket) of the head's own node, for a client on its machine."""
    def next_object_id(self) -> int: ...
    def objects(self) -> ObjectClient: ...

@final
class ObjectClient:
    """Objects for a process on no node: stored on the node the head picks, read from the
    nodes that hold them (ObjectLostError for an object no node holds)."""
    def __new__(
        cls,
        address: str,
        timeout: float = 5.0,
        token: str | None = None,
        ca_pem: str | None = None,
    ) -> ObjectClient: ...
    def delete(self, object_ids: list[int]) -> None: ...
    def place_and_put(self, object_id: int, parts: list[bytes]) -> PlacedObject: ...
    def locate_and_fetch(self, object_id: int, rebuild_wait: float = 60.0) -> bytes: ...

@final
class PlacedObject:
    """Where ObjectClient.place_and_put stored an object."""

    node_id: int
    node_name: str
    size: int

@final
class NodeObjects:
    """The local node's object store, over its Unix socket (``FLAME_NODE_SOCKET``)."""

    socket_path: str
    def __new__(cls, socket_path: str) -> NodeObjects: ...
    def seal(self, object_id: int, size: int) -> None: ...
    def pull(self, object_ids: list[int], pin: bool = False) -> list[tuple[int, int]]:
        """Make these objects local; ``(id, size)`` each. With ``pin`` they stay in place
        until :meth:`release` (the caller maps them first)."""
    def release(self, object_ids: list[int]) -> None:
        """The caller has mapped these pinned objects: the node may move them again."""

@final
class LocalCluster:
    """An embedded session manager + executor manager on 127.0.0.1, inside this process."""

    address: str
    dashboard_url: str | None  # http://127.0.0.1:PORT/ (dashboard, /metrics, JSON API)
    token: str  # the head's admin token; only this process holds it
    def __new__(
        cls,
        slots: int,
        state_dir: str,
        python: str,
        host: str = ...,  # "127.0.0.1"
        port: int = 0,
        max_payload_bytes: int | None = None,  # largest task input/output (default 256 MiB)
        client_lease: float | None = None,  # s a client may be gone before its sessions close
        release_delay: float | None = None,  # s an idle executor stays bound to its session
        policies: list[str] | None = None,  # scheduler policies on (default: the daemon's)
    ) -> LocalCluster: ...
    def stop(self, grace: float = 5.0) -> None: ...

class ServiceHost(Protocol):
    def enter(
        self,
        session_id: int,
        application: str,
        app_spec: bytes,
        common_data: bytes,
        max_output_bytes: int,
        result_object_bytes: int,
    ) -> ErrorTuple | None: ...
    def invoke(self, task_id: int, input: bytes) -> InvokeResult:
        """Output bytes, a stored result or an error tuple; paired with the task's log text
        when it printed."""
    def leave(self) -> None: ...

def executor_blocked(blocked: bool) -> bool: ...
def result_object_id(task_id: int) -> int:
    """The id of the object a task's large result is stored as (``ObjectId::result_of``)."""

def run_executor(address: str, executor_id: int, host: ServiceHost) -> None:
    """Run the executor loop until the session manager says stop or the link is lost, as a
    node's executor process: it dies (with its process group) when its node dies, and within
    5 s of losing its stream even mid-task."""

def init_logging(filter: str, json: bool = False) -> None:
    """Send Rust-side logs to stderr with a RUST_LOG-style filter; first call wins."""

def discover(address: str, timeout: float = 5.0, ca_pem: str | None = None) -> dict[str, Any]:
    """Ask the head what it is, without credentials: ``tls``, ``ca_fingerprint``,
    ``state_dir`` (only when this process is on the head's machine) and ``version``."""

def daemon_main(argv: list[str]) -> int:
    """Run the `flame-daemon` command line (GIL released); returns the exit code."""

__version__: str
