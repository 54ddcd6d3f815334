"""The low-level API: connections, sessions and raw-bytes tasks.

This layer speaks only bytes, so services written in any language can be driven from it::

    with flame.connect("127.0.0.1:8080") as conn:
        conn.register_application("echo", EchoService)
        with conn.create_session("echo", common_data=b">") as session:
            print(session.run_task(b"hi").result())

The decorator API (``@flame.service``) is built on it.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Callable

from flame import _core, _credentials, _serde, errors
from flame._node_objects import NodeObjects
from flame._scheduling import Scheduling
from flame.application import FlameService, SessionContext, TaskContext
from flame.futures import CompletionPump, Decoder, Future
from flame.objects import SPILL_BYTES, ObjectRef, ObjectStore, common_data_ref, reads_of

__all__ = [
    "Connection",
    "FlameService",
    "Session",
    "SessionContext",
    "SessionInfo",
    "TaskContext",
    "connect",
]

SessionInfo = _core.SessionInfo


def connect(
    address: str,
    *,
    timeout: float = 5.0,
    client_name: str = "",
    log_to_client: bool = True,
    token: str | None = None,
    ca: str | None = None,
) -> Connection:
    """Connect to a Flame daemon.

    Args:
        address: ``host:port`` (or ``http://`` / ``https://host:port``) of the daemon.
        timeout: Seconds to wait for the daemon to answer.
        client_name: A label shown in the daemon's logs.
        log_to_client: Echo what each task printed to this process's stderr, every line
            prefixed with ``(task SESSION/TASK)``.
        token: The user token to authenticate with. Default: ``$FLAME_TOKEN``, then the
            entry of ``flame login`` in ``~/.flame/credentials``, then (for a daemon on
            this machine run by this OS user) its ``admin.token``.
        ca: The cluster CA of an ``https://`` daemon (PEM text or a file). Default:
            ``$FLAME_CA_FILE``, the credentials entry, or pinned by the token's fingerprint.

    Raises:
        flame.ConnectionError: the daemon cannot be reached (the message names the address).
        flame.AuthenticationError: the daemon refuses the credentials (or there are none).
    """
    conn = Connection(
        address,
        timeout=timeout,
        client_name=client_name,
        log_to_client=log_to_client,
        token=token,
        ca=ca,
    )
    _connected.add(conn)
    return conn


# Connections made by `connect` (not by `flame.init`): module-level calls look here so they
# never start an embedded cluster behind an explicit connection's back (flame.api.runtime).
_connected: weakref.WeakSet[Connection] = weakref.WeakSet()


def open_connections() -> list[Connection]:
    """The connections made by :func:`connect` in this process that are still open."""
    return [c for c in list(_connected) if not c.closed]


def _open(address: str, timeout: float, name: str, found: _credentials.Found) -> _core.Connection:
    """The native connection, with a refusal that says where the token came from and what
    to do."""
    try:
        return _core.Connection(address, timeout, name, token=found.token, ca_pem=found.ca_pem)
    except errors.AuthenticationError as e:
        if found.token is None:
            raise errors.AuthenticationError(
                f"{e} — no token was found for {address}: {_credentials.login_hint(address)}"
            ) from None
        raise errors.AuthenticationError(
            f"{e} — the token came from {found.source}; {_credentials.login_hint(address)}"
        ) from None


def _close_native(conn: _core.Connection, pump: CompletionPump) -> None:
    try:
        conn.close()
    finally:
        pump.join(timeout=5.0)


class Connection:
    """A connection to a Flame daemon. Use :func:`connect` to make one.

    Closing it (or leaving its ``with`` block) fails the futures of its unfinished tasks
    with :class:`flame.ConnectionError`; it does not close its sessions.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        client_name: str = "",
        log_to_client: bool = True,
        token: str | None = None,
        ca: str | None = None,
    ) -> None:
        found = _credentials.lookup(address, token, ca, timeout=timeout)
        self._conn = _open(address, timeout, client_name or _default_name(), found)
        self._pump = CompletionPump(self._conn, echo_logs=log_to_client)
        self._finalizer = weakref.finalize(self, _close_native, self._conn, self._pump)
        # 0 (or an older native module without the attribute) means "no limit known".
        self._max_bytes: int | None = getattr(self._conn, "max_payload", 0) or None
        self.objects = ObjectStore(
            self._conn.objects,
            next_id=self._conn.next_object_id,
            node=_local_node(self._conn),
            announce=self._conn.announce_objects,
            announce_container=self._conn.announce_container,
        )
        self.objects.cluster = self._conn.state_id
        # Task inputs too large to travel inline are stored as objects (see flame.objects),
        # so a decorated call's arguments are never refused for their size.
        self._spill = self.objects.spill
        self._spill_over = min(SPILL_BYTES, self._max_bytes or SPILL_BYTES)
        # Large common data of sessions opened here, stored as objects (see create_session).
        self._session_objects: dict[int, ObjectRef] = {}

    def __repr__(self) -> str:
        return f"<flame.Connection {self.address} client={self.client_id}>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        """The daemon's address."""
        return self._conn.address

    @property
    def client_id(self) -> int:
        """The id the daemon gave this client."""
        return self._conn.client_id

    @property
    def max_payload(self) -> int | None:
        """The largest task input or output the daemon accepts (``None``: no limit known)."""
        return self._max_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Close the connection; unfinished futures fail with :class:`flame.ConnectionError`."""
        self.objects.close()
        self._finalizer()

    def put(self, value: Any) -> ObjectRef:
        """Store ``value`` in the cluster once; pass the returned ref to tasks instead.

        Raises:
            flame.SerializationError: ``value`` cannot be pickled.
        """
        return self.objects.put(value)

    # -------------------------------------------------------------- applications

    def register_application(
        self, name: str, service: type[FlameService], description: str = ""
    ) -> None:
        """Register ``service`` (a :class:`FlameService` subclass) under ``name``.

        The class is stored by value, so executors need not import its module.

        Raises:
            flame.InvalidArgumentError: ``service`` is not a FlameService subclass.
            flame.SerializationError: the class cannot be pickled.
        """
        if not (isinstance(service, type) and issubclass(service, FlameService)):
            raise errors.InvalidArgumentError(
                f"register_application({name!r}): expected a FlameService subclass, "
                f"got {_serde.describe(service)}"
            )
        _serde.register_by_value(service.__module__)
        spec = _serde.dumps_function(
            {"kind": "service", "cls": service}, what=f"service class {service.__qualname__}"
        )
        self._conn.register_application(name, spec, description)

    def list_applications(self) -> list[tuple[str, str]]:
        """``(name, description)`` of each registered application."""
        return [(name, description) for name, _, description in self._conn.list_applications()]

    # -------------------------------------------------------------- sessions

    def create_session(
        self,
        application: str,
        common_data: bytes = b"",
        slots: int = 1,
        *,
        app_spec: bytes = b"",
        max_retries: int = 3,
        timeout: float | None = None,
        priority: int = 0,
        python: str | None = None,
        max_executors: int | None = None,
        min_executors: int | None = None,
        weight: float = 1.0,
        user: str | None = None,
    ) -> Session:
        """Open a session of a registered application (or of an inline ``app_spec``).

        Args:
            application: The registered application's name.
            common_data: Bytes handed to every executor's ``on_session_enter``.
            slots: The most executors the session may use at once (0: no limit); the same
                as ``max_executors``.
            app_spec: An inline service spec, instead of the registered one.
            max_retries: Re-runs of a task whose executor died.
            timeout: Per-task time limit in seconds (``None``: none).
            priority: Higher runs first when sessions compete for executors.
            python: The interpreter executors should use (default: this one).
            max_executors: The most executors the session may hold (0 or None: no limit).
            min_executors: Executors held from the moment the session opens, even idle.
            weight: Share relative to sessions of the same priority under fair share.
            user: The tenant for per-tenant fair share (default: this connection).

        Raises:
            flame.InvalidArgumentError: unknown application or bad option.
        """
        data = bytes(common_data)
        stored = None
        if len(data) > SPILL_BYTES:
            # Stored once, as an object: each node fetches it once and its executors map
            # it, instead of every bind carrying it through the head.
            stored = self.objects.store_parts([data], len(data))
            data = common_data_ref(stored)
        scheduling = Scheduling.of(
            slots=slots,
            max_executors=max_executors,
            min_executors=min_executors,
            weight=weight,
            priority=priority,
            user=user,
        )
        info = self._conn.create_session(
            application,
            app_spec=app_spec,
            common_data=data,
            max_retries=max_retries,
            timeout=float(timeout or 0.0),
            python=sys.executable if python is None else python,
            **scheduling.session_kwargs(),
        )
        if stored is not None:
            self._session_objects[info.id] = stored  # until the session is closed here
        return Session(self, info)

    def get_session(self, session_id: int) -> Session:
        """A handle on an existing session.

        Raises:
            flame.SessionError: the daemon does not know the session.
        """
        return Session(self, self._conn.get_session(session_id))

    def list_sessions(self) -> list[SessionInfo]:
        """Information on every session the daemon knows."""
        return self._conn.list_sessions()

    def close_session(self, session_id: int) -> SessionInfo:
        """Close a session; its unfinished tasks are cancelled."""
        info = self._conn.close_session(session_id)
        self._session_objects.pop(session_id, None)
        return info

    def cluster_info(self) -> dict[str, Any]:
        """Nodes, executors and queue lengths of the cluster."""
        return dict(self._conn.cluster_info())

    def task_log(self, session_id: int, task_id: int) -> str:
        """What a task printed (stdout and stderr); empty if nothing, or not finished yet.

        Raises:
            flame.FlameError: the daemon knows no such task (NOT_FOUND).
        """
        return self._conn.task_log(session_id, task_id)

    # -------------------------------------------------------------- introspection

    def get_task(self, session_id: int, task_id: int) -> dict[str, Any]:
        """One task: state, attempts, times (ms since the epoch, None if not yet), the
        executor and node of its last attempt, and its error (kind, message, traceback).

        Raises:
            flame.NotFoundError: the session has no such task.
        """
        return dict(self._conn.get_task(session_id, task_id))

    def list_tasks(
        self, session_id: int, *, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """A page of a session's tasks in task-id order: ``{"tasks": [...], "total": n}``.

        ``state`` is one of pending, running, succeeded, failed, cancelled; ``limit`` is at
        most 1000.

        Raises:
            flame.SessionError: the session is unknown.
            flame.InvalidArgumentError: a bad state or limit.
        """
        return dict(self._conn.list_tasks(session_id, state, limit, offset))

    def list_objects(
        self, *, node_id: int = 0, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """A page of the objects stored on nodes, in id order: ``{"objects": [...], "total": n}``.

        Each object: object_id, size, primary_node and copy_nodes (node ids; primary_node is
        None once no node holds it), session_id and task_id of the task whose result it is
        (None for a put). ``node_id`` (0: every node) keeps only what that node holds;
        ``limit`` is at most 1000. A user sees its own objects, an admin all.

        Raises:
            flame.InvalidArgumentError: a limit above 1000.
        """
        return dict(self._conn.list_objects(node_id, limit, offset))

    def list_executors(self) -> list[dict[str, Any]]:
        """Every executor: id, node_id, state, session_id (None if unbound), inflight."""
        return [dict(e) for e in self._conn.list_executors()]

    def cancel_task(self, session_id: int, task_id: int) -> dict[str, Any]:
        """Cancel one task (a running one's executor is replaced) and return it.

        Raises:
            flame.NotFoundError: the session has no such task.
            flame.InvalidArgumentError: the task has already finished.
        """
        return dict(self._conn.cancel_task(session_id, task_id))

    # -------------------------------------------------------------- tasks

    def submit(
        self, session_id: int, inputs: list[bytes], decoder: Decoder | None = None
    ) -> list[Future]:
        """Submit a batch of tasks to a session; one future per input, in order.

        The futures' results are the output bytes, or ``decoder(output)`` if given.

        Raises:
            flame.SessionError: the session is unknown or closed.
            flame.PayloadTooLargeError: an input is over the daemon's limit.
            flame.ConnectionError: the connection is closed.
        """
        futures = [Future(decoder) for _ in inputs]
        self._submit(session_id, inputs, futures)
        return futures

    def _submit(self, session_id: int, inputs: list[bytes], futures: list[Future]) -> None:
        if self.closed:
            raise errors.ConnectionError(f"the connection to {self.address} is closed")
        if self._max_bytes is not None:
            for i, data in enumerate(inputs):
                if len(data) > self._max_bytes:
                    raise errors.PayloadTooLargeError(
                        f"task input #{i} is {len(data)} bytes, over the daemon's limit of "
                        f"{self._max_bytes} bytes (nothing was submitted)"
                    )
        # The objects each task reads (refs in its input): the head keeps them while it
        # runs, and data-aware placement looks at them.
        reads = [reads_of(f._keep) for f in futures]
        if any(reads):
            task_ids = self._conn.submit(session_id, inputs, reads)
        else:
            task_ids = self._conn.submit(session_id, inputs)
        self._pump.register(session_id, task_ids, futures)


def _local_node(conn: _core.Connection) -> NodeObjects | None:
    """The node store this process uses: its executor's node (from the environment), else
    the head's own node when the head says it runs one on this machine."""
    node = NodeObjects.from_env()
    if node is not None:
        return node
    local = getattr(conn, "local_node", None)  # (id, socket); None: the head runs no node
    return NodeObjects.at(*local) if local else None


def _default_name() -> str:
    return f"python-{os.getpid()}"


class Session:
    """A session opened with :meth:`Connection.create_session`.

    Closing it cancels its unfinished tasks.
    """

    def __init__(self, conn: Connection, info: SessionInfo) -> None:
        self._conn = conn
        self._info = info

    def __repr__(self) -> str:
        return f"<flame.Session {self.id} application={self.application!r}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def id(self) -> int:
        """The session's id."""
        return self._info.id

    @property
    def application(self) -> str:
        """The application the session runs."""
        return self._info.application

    def info(self) -> SessionInfo:
        """Fresh information on the session from the daemon (counts, state)."""
        self._info = self._conn._conn.get_session(self.id)
        return self._info

    def run_task(self, input: bytes, callback: Callable[[Future], Any] | None = None) -> Future:
        """Submit one task; its future's result is the output bytes.

        Args:
            input: The task's input.
            callback: Called with the future once it is done (on Flame's completion
                thread, or at once if it is already done).

        Raises:
            flame.SessionError: the session is unknown or closed.
            flame.ConnectionError: the connection is closed.
        """
        (future,) = self._conn.submit(self.id, [bytes(input)])
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def run_tasks(self, inputs: Iterable[bytes]) -> list[Future]:
        """Submit a batch of tasks in one go; one future per input, in order."""
        return self._conn.submit(self.id, [bytes(i) for i in inputs])

    def close(self) -> None:
        """Close the session; its unfinished tasks are cancelled. Idempotent."""
        if self._info.state == "closed":
            return
        try:
            self._info = self._conn.close_session(self.id)
        except errors.SessionError:
            pass  # already closed, or forgotten by the daemon: nothing left to close
