"""Flame: a distributed engine for many short tasks.

The decorator API::

    import flame

    @flame.service
    def square(x):
        return x * x

    print(flame.get(square.map(range(10))))

runs on an embedded cluster started in this process (or on the daemon at
``$FLAME_ADDRESS`` / ``flame.init(address)``). The low-level API —
:func:`connect`, :class:`Connection`, :class:`Session`, :class:`FlameService` — speaks raw
bytes, for services and clients in any language.
"""

from flame import _core
from flame.api import (
    as_completed,
    cluster_info,
    dashboard_url,
    get,
    init,
    is_initialized,
    nodes,
    register_application,
    shutdown,
    wait,
)
from flame.application import FlameService, SessionContext, TaskContext
from flame.client import Connection, Session, SessionInfo, connect
from flame.decorator import service
from flame.errors import (
    CancelledError,
    ConnectionError,
    ExecutorLostError,
    FlameError,
    FlameWarning,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    RemoteTraceback,
    SerializationError,
    SessionEnterError,
    SessionError,
    TaskError,
    TaskTimeoutError,
)
from flame.futures import Future
from flame.remote import RemoteFunction
from flame.remote_class import RemoteClass, RemoteMethod, ServiceInstance

__version__: str = _core.__version__

__all__ = [
    "CancelledError",
    "Connection",
    "ConnectionError",
    "ExecutorLostError",
    "FlameError",
    "FlameService",
    "FlameWarning",
    "Future",
    "InvalidArgumentError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RemoteClass",
    "RemoteFunction",
    "RemoteMethod",
    "RemoteTraceback",
    "SerializationError",
    "ServiceInstance",
    "Session",
    "SessionContext",
    "SessionEnterError",
    "SessionError",
    "SessionInfo",
    "TaskContext",
    "TaskError",
    "TaskTimeoutError",
    "__version__",
    "as_completed",
    "cluster_info",
    "connect",
    "dashboard_url",
    "get",
    "init",
    "is_initialized",
    "nodes",
    "register_application",
    "service",
    "shutdown",
    "wait",
]
