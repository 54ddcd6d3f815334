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

Names are imported on first use (PEP 562), so a process that needs few of them — an
executor — does not load the client, asyncio and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flame import _core

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time see __getattr__
    from flame.api import (
        cluster_info,
        dashboard_url,
        init,
        is_initialized,
        nodes,
        put,
        register_application,
        shutdown,
    )
    from flame.application import (
        FlameService,
        SessionContext,
        TaskContext,
    )
    from flame.client import (
        Connection,
        Session,
        SessionInfo,
        connect,
    )
    from flame.decorator import service
    from flame.errors import (
        AuthenticationError,
        CancelledError,
        ClusterStateLostError,
        ConnectionError,
        ExecutorLostError,
        FlameError,
        FlameWarning,
        InvalidArgumentError,
        NotFoundError,
        ObjectLostError,
        PayloadTooLargeError,
        PermissionDeniedError,
        RemoteTraceback,
        SerializationError,
        SessionEnterError,
        SessionError,
        StorageUnavailableError,
        TaskError,
        TaskTimeoutError,
    )
    from flame.futures import Future
    from flame.objects import ObjectRef
    from flame.remote import RemoteFunction
    from flame.remote_class import (
        RemoteClass,
        RemoteMethod,
        ServiceInstance,
    )
    from flame.waiting import as_completed, get, wait

__version__: str = _core.__version__

# Where each public name lives.
_EXPORTS: dict[str, str] = {
    "as_completed": "flame.waiting",
    "cluster_info": "flame.api",
    "dashboard_url": "flame.api",
    "get": "flame.waiting",
    "init": "flame.api",
    "is_initialized": "flame.api",
    "nodes": "flame.api",
    "put": "flame.api",
    "register_application": "flame.api",
    "shutdown": "flame.api",
    "wait": "flame.waiting",
    "FlameService": "flame.application",
    "SessionContext": "flame.application",
    "TaskContext": "flame.application",
    "Connection": "flame.client",
    "Session": "flame.client",
    "SessionInfo": "flame.client",
    "connect": "flame.client",
    "service": "flame.decorator",
    "CancelledError": "flame.errors",
    "ClusterStateLostError": "flame.errors",
    "ConnectionError": "flame.errors",
    "ExecutorLostError": "flame.errors",
    "FlameError": "flame.errors",
    "FlameWarning": "flame.errors",
    "InvalidArgumentError": "flame.errors",
    "NotFoundError": "flame.errors",
    "ObjectLostError": "flame.errors",
    "PermissionDeniedError": "flame.errors",
    "AuthenticationError": "flame.errors",
    "PayloadTooLargeError": "flame.errors",
    "RemoteTraceback": "flame.errors",
    "SerializationError": "flame.errors",
    "SessionEnterError": "flame.errors",
    "SessionError": "flame.errors",
    "StorageUnavailableError": "flame.errors",
    "TaskError": "flame.errors",
    "TaskTimeoutError": "flame.errors",
    "Future": "flame.futures",
    "ObjectRef": "flame.objects",
    "RemoteFunction": "flame.remote",
    "RemoteClass": "flame.remote_class",
    "RemoteMethod": "flame.remote_class",
    "ServiceInstance": "flame.remote_class",
}

__all__ = [
    "CancelledError",
    "ClusterStateLostError",
    "Connection",
    "ConnectionError",
    "ExecutorLostError",
    "FlameError",
    "FlameService",
    "FlameWarning",
    "Future",
    "InvalidArgumentError",
    "NotFoundError",
    "ObjectLostError",
    "ObjectRef",
    "PayloadTooLargeError",
    "RemoteClass",
    "RemoteFunction",
    "RemoteMethod",
    "RemoteTraceback",
    "SerializationError",
    "ServiceInstance",
    "PermissionDeniedError",
    "AuthenticationError",
    "Session",
    "SessionContext",
    "SessionEnterError",
    "SessionError",
    "SessionInfo",
    "StorageUnavailableError",
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
    "put",
    "register_application",
    "service",
    "shutdown",
    "wait",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, ``flame.api``...) when it is first used."""
    module = _EXPORTS.get(name)
    if module is None:
        try:
            return importlib.import_module(f"flame.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"flame.{name}":
                raise
            raise AttributeError(f"module 'flame' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
