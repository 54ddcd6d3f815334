"""The process-wide runtime: ``init``/``shutdown`` and the cluster it is connected to.

Waiting on futures (``get``, ``wait``, ``as_completed``) is in :mod:`flame.waiting`.

``flame.init()`` without an address (and no ``FLAME_ADDRESS`` in the environment) starts an
embedded cluster inside this process — a session manager and an executor manager on
127.0.0.1 whose executors are child processes — and stops it at exit. With an address it
only connects. Any API call made before ``init`` initializes locally.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import urllib.parse
from typing import Any

from flame import _blocking, _core, _tempstate, errors
from flame._scheduling import Scheduling
from flame.client import Connection, open_connections
from flame.objects import ObjectRef

__all__ = [
    "cluster_info",
    "dashboard_url",
    "init",
    "is_initialized",
    "nodes",
    "register_application",
    "shutdown",
]


class Runtime:
    """One initialized Flame: a connection, maybe an embedded cluster, and the sessions
    opened by ``@flame.service`` objects (closed at shutdown)."""

    def __init__(
        self,
        conn: Connection,
        address: str | None,
        cluster: _core.LocalCluster | None = None,
        temp_state: _tempstate.TempState | None = None,
        token: str | None = None,
    ) -> None:
        self.conn = conn
        self.token = token  # the embedded cluster's admin token (dashboard_url)
        self.address = address  # as asked for: None means "embedded"
        self.cluster = cluster
        self.temp_state = temp_state
        self.temp_dir = None if temp_state is None else temp_state.path
        self.closed = False
        # Re-entrant: a dropped class instance may close its session from a finalizer that
        # the garbage collector runs while this thread already holds the lock.
        self._lock = threading.RLock()
        self._sessions: set[int] = set()

    def open_session(
        self,
        application: str,
        app_spec: bytes,
        *,
        scheduling: Scheduling,
        max_retries: int,
        timeout: float | None,
    ) -> int:
        """Open a session for a decorated function or class; closed at shutdown."""
        info = self.conn._conn.create_session(
            application,
            app_spec=app_spec,
            max_retries=max_retries,
            timeout=float(timeout or 0.0),
            python=sys.executable,
            **scheduling.session_kwargs(),
        )
        with self._lock:
            self._sessions.add(info.id)
        _blocking.opened(info.id)  # inside an executor: closed when the task ends
        return info.id

    def is_open(self, session_id: int) -> bool:
        """Whether a session opened here is still open (not closed through this runtime)."""
        return session_id in self._sessions

    def close_session(self, session_id: int) -> None:
        """Close a session opened by :meth:`open_session`; quiet if already gone."""
        with self._lock:
            if session_id not in self._sessions:
                return
            self._sessions.discard(session_id)
        if self.closed or self.conn.closed:
            return
        try:
            self.conn.close_session(session_id)
        except errors.FlameError:
            pass  # unknown or closed already, or the daemon is gone: nothing to close

    def close(self) -> None:
        """Close the sessions, the connection, the embedded cluster and its temp dir."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            sessions = sorted(self._sessions)
            self._sessions.clear()
        try:
            for session_id in sessions:
                if self.conn.closed:
                    break
                try:
                    self.conn.close_session(session_id)
                except errors.FlameError:
                    pass
            self.conn.close()
        finally:
            try:
                if self.cluster is not None:
                    self.cluster.stop()
            finally:
                if self.temp_state is not None:
                    self.temp_state.remove()


def close_task_sessions(session_ids: list[int]) -> None:
    """Close the sessions a task opened (inside an executor, when the task ends)."""
    rt = _runtime
    if rt is None:
        return
    for session_id in session_ids:
        rt.close_session(session_id)


_lock = threading.RLock()
_runtime: Runtime | None = None
_atexit_registered = False


def init(
    address: str | None = None,
    *,
    slots: int | None = None,
    state_dir: str | None = None,
    log_level: str | None = None,
    max_payload: int | None = None,
    client_lease: float | None = None,
    log_to_client: bool = True,
    token: str | None = None,
) -> None:
    """Connect to a Flame cluster, or start an embedded one.

    Args:
        address: ``host:port`` of a running ``flame-daemon``. Default: ``$FLAME_ADDRESS``;
            if that is unset too, an embedded cluster is started in this process and
            stopped at exit (no process is left behind). The embedded cluster needs no
            token: it makes one that only this process holds.
        slots: Executors of the embedded cluster (default: the number of CPUs).
        state_dir: Where the embedded cluster keeps its state (default: a temporary
            directory, removed at shutdown; if this process is killed instead, the next
            embedded cluster started on the machine removes it).
        log_level: Log level of the native side (e.g. ``"info"``, ``"debug"``, or a
            ``RUST_LOG`` filter), for this process and the executors it starts.
        max_payload: The embedded cluster's largest inline task input or result, in bytes
            (default 256 MiB). Decorated calls with bigger arguments send them as an
            object instead (see :func:`put`), and a result over ``result_object_mb`` (1 MiB)
            stays on its node as an object; with results inline (``result_object_mb = 0``)
            a bigger result fails its task with :class:`flame.PayloadTooLargeError`, and so
            does a bigger raw input of the low-level API, at call time.
        client_lease: Seconds the embedded cluster keeps a client's sessions open after
            losing it (default 60), so that a client that reconnects finds them.
        log_to_client: Echo what each task prints to this process's stderr, each line
            prefixed with ``(task SESSION/TASK)``. The output is kept by the daemon
            either way (``future.log()``).
        token: The user token for ``address``. Default: ``$FLAME_TOKEN``, the entry of
            ``flame login ADDRESS`` in ``~/.flame/credentials``, or, for a daemon on this
            machine run by this OS user, its ``admin.token``.

    ``slots``, ``state_dir``, ``max_payload`` and ``client_lease`` configure the embedded
    cluster; they are ignored when connecting to a daemon, which has its own settings
    (``flame-daemon --config``). Calling ``init`` again with the same address does nothing.

    Raises:
        flame.InvalidArgumentError: already initialized with a different address, or an
            option is out of range.
        flame.ConnectionError: the daemon at ``address`` cannot be reached.
        flame.AuthenticationError: the daemon refuses the token (or there is none).
    """
    global _runtime, _atexit_registered
    address = address or os.environ.get("FLAME_ADDRESS") or None
    with _lock:
        if _runtime is not None:
            if _same_address(_runtime.address, address):
                return
            current = _runtime.address or "an embedded cluster"
            raise errors.InvalidArgumentError(
                f"flame is already initialized with {current}; call flame.shutdown() "
                f"before flame.init({address!r})"
            )
        if log_level:
            _set_log_level(log_level)
        if address is not None:
            conn = Connection(address, log_to_client=log_to_client, token=token)
            _runtime = Runtime(conn, address)
        else:
            _runtime = _start_embedded(slots, state_dir, max_payload, client_lease, log_to_client)
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True


def _same_address(a: str | None, b: str | None) -> bool:
    def bare(x: str | None) -> str | None:  # "http://h:p/" and "h:p" are one daemon
        return None if x is None else x.split("://")[-1].rstrip("/")

    return bare(a) == bare(b)


def _set_log_level(level: str) -> None:
    # Executors (child processes) read RUST_LOG; this process's own logging is set up by
    # the native module when it offers a way to.
    os.environ["RUST_LOG"] = level
    init_logging = getattr(_core, "init_logging", None)
    if init_logging is not None:
        init_logging(level)


def _start_embedded(
    slots: int | None,
    state_dir: str | None,
    max_payload: int | None = None,
    client_lease: float | None = None,
    log_to_client: bool = True,
) -> Runtime:
    if slots is not None and slots < 1:
        raise errors.InvalidArgumentError(f"slots must be at least 1, got {slots}")
    if max_payload is not None and (
        not isinstance(max_payload, int) or isinstance(max_payload, bool) or max_payload < 1
    ):
        raise errors.InvalidArgumentError(
            f"max_payload must be a number of bytes >= 1, got {max_payload!r}"
        )
    if client_lease is not None and not (
        isinstance(client_lease, (int, float)) and client_lease > 0
    ):
        raise errors.InvalidArgumentError(
            f"client_lease must be a number of seconds > 0, got {client_lease!r}"
        )
    temp = None
    if state_dir is None:
        # Directories of embedded clusters whose process was killed go first (see _tempstate).
        _tempstate.sweep()
        temp = _tempstate.TempState()
        state_dir = temp.path
    try:
        cluster = _core.LocalCluster(
            slots or os.cpu_count() or 1,
            state_dir,
            sys.executable,
            max_payload_bytes=max_payload,
            client_lease=None if client_lease is None else float(client_lease),
        )
    except BaseException:
        if temp is not None:
            temp.remove()
        raise
    # The head's admin token exists only in this process's memory: other local users
    # cannot connect (the executors get a node token, not this one).
    token = getattr(cluster, "token", None)
    try:
        conn = Connection(cluster.address, log_to_client=log_to_client, token=token)
    except BaseException:
        cluster.stop()
        if temp is not None:
            temp.remove()
        raise
    return Runtime(conn, None, cluster, temp, token)


def shutdown() -> None:
    """Close the sessions opened through the decorator API, disconnect, and stop the
    embedded cluster if there is one. Unfinished futures fail with
    :class:`flame.ConnectionError`. Does nothing if Flame is not initialized."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.close()


def is_initialized() -> bool:
    """Whether :func:`init` was called (explicitly or by a first API call)."""
    return _runtime is not None


def runtime(caller: str = "a module-level flame call") -> Runtime:
    """The current runtime, initializing an embedded cluster if there is none.

    Raises:
        flame.FlameError: there is none, and this process holds a connection made by
            :func:`flame.connect`: an embedded cluster started now would not be the
            cluster that connection leads to (``caller`` names what was called).
    """
    rt = _runtime
    if rt is not None:
        return rt
    with _lock:
        if _runtime is None:
            _refuse_beside(open_connections(), caller)
            init()
        assert _runtime is not None
        return _runtime


def _refuse_beside(connections: list[Connection], caller: str) -> None:
    if not connections:
        return
    address = connections[0].address
    raise errors.FlameError(
        f"{caller} uses the cluster of flame.init(), which this process has not called, and "
        f"it holds a connection from flame.connect({address!r}); without flame.init() the "
        f"call would start a separate embedded cluster. Use the connection's method "
        f"(for example conn.register_application(...)), or call flame.init({address!r}) "
        f"first"
    )


def cluster_info() -> dict[str, Any]:
    """Nodes, executors, open sessions and queue lengths of the cluster."""
    return runtime("flame.cluster_info()").conn.cluster_info()


def dashboard_url() -> str | None:
    """The embedded cluster's dashboard, ``http://127.0.0.1:PORT/?token=...``: opening it
    once logs the browser in (a cookie), as Jupyter does; ``/metrics`` and the JSON API live
    there too. ``None`` when connected to a daemon: ``flame-daemon`` prints its own dashboard
    address when it starts (``--http-port``, default 8265)."""
    rt = runtime()
    url = None if rt.cluster is None else getattr(rt.cluster, "dashboard_url", None)
    if url is None or not rt.token:
        return url
    return f"{url}?token={urllib.parse.quote(rt.token)}"


def register_application(name: str, service: type[Any], description: str = "") -> None:
    """Register a :class:`flame.FlameService` subclass under ``name`` on the current cluster,
    so that any client can open sessions of it by name (``conn.create_session(name)``).

    Raises:
        flame.InvalidArgumentError: ``service`` is not a FlameService subclass.
        flame.SerializationError: the class cannot be pickled.
    """
    runtime("flame.register_application()").conn.register_application(name, service, description)


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the cluster once and return a reference to pass to tasks.

    A task receiving the ref (anywhere in its arguments) gets the value, its numpy arrays
    as read-only zero-copy views. ``flame.get(ref)`` or ``ref.get()`` reads it here. The
    object lives while the ref is referenced here or a task using it is unfinished.

    Raises:
        flame.SerializationError: ``value`` cannot be pickled.
    """
    return runtime("flame.put()").conn.put(value)


def nodes() -> list[Any]:
    """The cluster's nodes, one dict each: ``id``, ``name``, ``address`` (where its connection
    came from), ``slots``, ``executors``, ``busy`` (executors running a task), ``cpus``,
    ``memory_total`` and ``memory_available`` (bytes; 0 when unknown), ``alive`` and
    ``draining``. See :func:`cluster_info`."""
    return list(cluster_info().get("nodes", []))
