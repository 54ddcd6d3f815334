"""Decorated classes: ``Cls(*args)`` opens a session in which each executor builds the
instance once; method calls are tasks on that session."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar

from flame import _serde, api, errors
from flame.client import Connection
from flame.futures import Future
from flame.objects import SPILL_BYTES, ObjectRef, take_noted
from flame.remote import Options, _Callable, _has_futures, _labelled, _substitute, passed

__all__ = ["RemoteClass", "RemoteMethod", "ServiceInstance"]

C = TypeVar("C")


def _public_methods(cls: type) -> list[str]:
    return sorted(
        name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name, None))
    )


class RemoteClass(Generic[C]):
    """A class whose instances live on executors. Made by :func:`service`.

    ``Cls(*args)`` opens a session in which each executor builds ``Cls(*args)`` once;
    it returns a :class:`ServiceInstance` whose methods return futures.
    """

    def __init__(self, cls: type[C], options: Options) -> None:
        self._cls = cls
        self._options = options
        self.methods = _public_methods(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__
        self.__wrapped__ = cls
        _serde.register_by_value(cls.__module__)

    def __repr__(self) -> str:
        return f"<flame service class {self.__module__}.{self.__qualname__}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteClass, (self._cls, self._options))

    def __call__(self, *args: Any, **kwargs: Any) -> ServiceInstance:
        """Open a session whose executors each build ``cls(*args, **kwargs)``.

        Futures among the arguments are waited for here.

        Raises:
            flame.SerializationError: the class or an argument cannot be pickled.
        """
        return ServiceInstance(self, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> ServiceInstance:
        """Same as calling the wrapper."""
        return ServiceInstance(self, args, kwargs)

    def local(self, *args: Any, **kwargs: Any) -> C:
        """Build an ordinary instance here, in this process."""
        return self._cls(*args, **kwargs)


def _class_spec(
    owner: RemoteClass[Any],
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: ObjectRef | None = None,
) -> bytes:
    """The app spec of a class session; on failure name the argument at fault. With
    ``call``, the constructor's ``(args, kwargs)`` are that object."""
    spec: dict[str, Any] = {
        "kind": "class",
        "cls": owner._cls,
        "args": args,
        "kwargs": kwargs,
        "retry": owner._options.retry_exceptions,
    }
    if call is not None:
        spec["call"] = call
    try:
        return _serde.dumps_function(spec, what=f"class {name}")
    except errors.SerializationError:
        for label, value in _labelled(args, kwargs):
            _serde.dumps_function(value, what=f"{label} of {name}() ({_serde.describe(value)})")
        raise


def _close_when_idle(
    rt: api.Runtime, session_id: int, pending: set[Future], keep: ObjectRef | None = None
) -> None:
    """Close a dropped instance's session once its unfinished calls are done (``keep``, its
    stored constructor arguments, lives until then: this call holds it)."""
    left = [f for f in list(pending) if not f.done()]
    if not left:
        rt.close_session(session_id)
        return
    lock = threading.Lock()
    count = [len(left)]

    def one_done(_: Any) -> None:
        with lock:
            count[0] -= 1
            last = count[0] == 0
        if last:
            rt.close_session(session_id)

    for f in left:
        f.add_done_callback(one_done)


class ServiceInstance:
    """A handle on a session running instances of a decorated class.

    Each public method of the class is an attribute returning a :class:`RemoteMethod`;
    ``obj.method(name)`` reaches one whose name the handle itself uses (``close``).
    Closing the handle (or leaving its ``with`` block) closes the session and cancels its
    unfinished calls; a handle that is dropped closes its session once its calls finish.
    """

    def __init__(self, owner: RemoteClass[Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self._owner = owner
        self._methods = frozenset(owner.methods)
        name = owner.__qualname__
        if _has_futures(args, kwargs):
            args, kwargs = _substitute(args, kwargs, passed)
        rt = api.runtime("a @flame.service class instance")
        spec = _class_spec(owner, name, args, kwargs)
        # Large constructor arguments are stored once, as an object: every executor's bind
        # then carries a ref, and each node fetches the bytes once (its executors map them).
        self._args_ref: ObjectRef | None = None
        if len(spec) > SPILL_BYTES:
            self._args_ref = rt.conn.put((args, kwargs))
            spec = _class_spec(owner, name, (), {}, call=self._args_ref)
            take_noted()  # the session keeps the ref, not a task
        self._runtime = rt
        self._conn = rt.conn
        self._session_id = owner._options.open(rt, name, spec)
        self._pending: set[Future] = set()
        self._finalizer = weakref.finalize(
            self, _close_when_idle, rt, self._session_id, self._pending, self._args_ref
        )
        self._finalizer.atexit = False  # shutdown closes every session anyway

    def __repr__(self) -> str:
        return f"<flame service instance {self._owner.__qualname__} session={self._session_id}>"

    def __getattr__(self, name: str) -> RemoteMethod:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(
                f"{self._owner.__qualname__} has no public method {name!r} "
                f"(methods: {', '.join(sorted(self._methods)) or 'none'})"
            )
        return RemoteMethod(self, name)

    def __enter__(self) -> ServiceInstance:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def session_id(self) -> int:
        """The id of the session running this instance."""
        return self._session_id

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return not self._finalizer.alive

    def method(self, name: str) -> RemoteMethod:
        """The remote method ``name`` (for names the handle itself uses)."""
        if name not in self._methods:
            return self.__getattr__(name)
        return RemoteMethod(self, name)

    def close(self) -> None:
        """Close the session; unfinished calls are cancelled. Idempotent."""
        if self._finalizer.detach() is not None:
            self._runtime.close_session(self._session_id)

    def _check_open(self) -> None:
        if self.closed:
            raise errors.SessionError(
                f"{self._owner.__qualname__} instance (session {self._session_id}) is closed"
            )
        if self._runtime.closed:
            raise errors.SessionError(
                f"{self._owner.__qualname__} instance (session {self._session_id}) belongs "
                "to a Flame runtime that was shut down"
            )


class RemoteMethod(_Callable):
    """A method of a :class:`ServiceInstance`; calling it returns a :class:`flame.Future`."""

    def __init__(self, instance: ServiceInstance, method: str) -> None:
        self._instance = instance
        self._method = method
        self.name = f"{instance._owner.__qualname__}.{method}"

    def __repr__(self) -> str:
        return f"<flame remote method {self.name} session={self._instance.session_id}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Future:
        """Run the method with these arguments on one of the session's instances."""
        return self._call(args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Future:
        """Same as calling it."""
        return self._call(args, kwargs)

    def map(self, *iterables: Iterable[Any]) -> list[Future]:
        """One call per item (like the builtin ``map``), submitted as one batch."""
        return self._map(iterables)

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        return (self._method, args, kwargs)

    def _session(self) -> tuple[Connection, int]:
        self._instance._check_open()
        return self._instance._conn, self._instance._session_id

    def _track(self, futures: list[Future]) -> None:
        pending = self._instance._pending
        for f in futures:
            pending.add(f)
            f.add_done_callback(pending.discard)
