"""``@flame.service``: run a function's calls, or a class's method calls, as Flame tasks.

A decorated function opens one session lazily, on its first call, shipping the function
(cloudpickled once per session); each call is one task. A decorated class opens one
session per instance; each executor of that session builds the instance once, and each
method call is one task on one of them.

Arguments that are futures are resolved first, without blocking the caller: the task is
submitted when the last of them is done, and fails with the first failure among them.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Generic, TypeVar, overload

from flame import _serde, api, errors
from flame.client import Connection
from flame.futures import Future

__all__ = ["RemoteClass", "RemoteFunction", "RemoteMethod", "ServiceInstance", "service"]

R = TypeVar("R")
C = TypeVar("C")
AnyFuture = concurrent.futures.Future


@dataclass(frozen=True)
class Options:
    """Session options of a decorated function or class (see :func:`service`)."""

    max_retries: int = 3
    timeout: float | None = None
    slots: int | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise errors.InvalidArgumentError(
                f"max_retries must be an int >= 0, got {self.max_retries!r}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise errors.InvalidArgumentError(f"timeout must be > 0 or None, got {self.timeout!r}")
        if self.slots is not None and (not isinstance(self.slots, int) or self.slots < 0):
            raise errors.InvalidArgumentError(f"slots must be an int >= 0, got {self.slots!r}")
        if not isinstance(self.priority, int):
            raise errors.InvalidArgumentError(f"priority must be an int, got {self.priority!r}")

    def open(self, rt: api.Runtime, name: str, app_spec: bytes) -> int:
        return rt.open_session(
            name,
            app_spec,
            slots=self.slots,
            max_retries=self.max_retries,
            timeout=self.timeout,
            priority=self.priority,
        )


@overload
def service(target: type[C]) -> RemoteClass[C]: ...
@overload
def service(target: Callable[..., R]) -> RemoteFunction[R]: ...
@overload
def service(
    target: None = None,
    *,
    max_retries: int = 3,
    timeout: float | None = None,
    slots: int | None = None,
    priority: int = 0,
) -> Callable[[Any], Any]: ...


def service(
    target: Any = None,
    *,
    max_retries: int = 3,
    timeout: float | None = None,
    slots: int | None = None,
    priority: int = 0,
) -> Any:
    """Make a function's calls, or a class's method calls, run as Flame tasks.

    Use it bare (``@flame.service``) or with options (``@flame.service(max_retries=1)``)::

        @flame.service
        def square(x):
            return x * x

        square(3).result()           # 9, computed on an executor
        flame.get(square.map(range(10)))

        @flame.service(slots=2)
        class Model:
            def __init__(self, path): self.weights = load(path)   # once per executor
            def predict(self, x): return self.weights @ x

        with Model("w.npy") as model:
            y = model.predict(x).result()

    Args:
        max_retries: Re-runs of a task whose executor died.
        timeout: Per-task time limit in seconds (``None``: none); an overrun fails the
            task with :class:`flame.TaskTimeoutError`.
        slots: The most executors the session may use (``None`` or 0: no limit).
        priority: Higher runs first when sessions compete for executors.

    Raises:
        flame.InvalidArgumentError: an option is out of range.
    """
    options = Options(max_retries, timeout, slots, priority)

    def wrap(obj: Any) -> Any:
        if inspect.isclass(obj):
            return RemoteClass(obj, options)
        if callable(obj):
            return RemoteFunction(obj, options)
        raise TypeError(f"@flame.service needs a function or a class, got {_serde.describe(obj)}")

    return wrap if target is None else wrap(target)


# ---------------------------------------------------------------- calls


def _encode(name: str, payload: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Serialize a call; on failure name the argument that cannot be pickled."""
    try:
        return _serde.dumps(payload, what=f"the arguments of {name}()")
    except errors.SerializationError:
        labelled = [(f"argument {i}", a) for i, a in enumerate(args)]
        labelled += [(f"argument {k!r}", v) for k, v in kwargs.items()]
        for label, value in labelled:
            _serde.dumps(value, what=f"{label} of {name}() ({_serde.describe(value)})")
        raise


def _has_futures(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return any(isinstance(a, AnyFuture) for a in args) or any(
        isinstance(v, AnyFuture) for v in kwargs.values()
    )


def _substitute(
    args: tuple[Any, ...], kwargs: dict[str, Any], value: Callable[[AnyFuture], Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    def one(a: Any) -> Any:
        return value(a) if isinstance(a, AnyFuture) else a

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


class _Callable:
    """What ``_call`` needs from a function or a method: a name, a payload, a session."""

    name: str

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        raise NotImplementedError

    def _session(self) -> tuple[Connection, int]:
        raise NotImplementedError

    def _track(self, futures: list[Future]) -> None:
        """Hook: futures just submitted (a class instance tracks its own)."""

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future:
        if not _has_futures(args, kwargs):
            data = _encode(self.name, self._payload(args, kwargs), args, kwargs)
            conn, session_id = self._session()
            future = Future(_serde.loads)
            conn._submit(session_id, [data], [future])
            self._track([future])
            return future
        # Check now what can be checked, so serialization errors surface at call time.
        p_args, p_kwargs = _substitute(args, kwargs, lambda f: None)
        _encode(self.name, self._payload(p_args, p_kwargs), p_args, p_kwargs)
        future = Future(_serde.loads)
        _Dependent(self, args, kwargs, future).start()
        return future

    def _map(self, iterables: tuple[Iterable[Any], ...]) -> list[Future]:
        if not iterables:
            raise TypeError(f"{self.name}.map() needs at least one iterable")
        if len(iterables) == 1:
            calls = [(a,) for a in iterables[0]]
        else:
            calls = list(zip(*iterables))
        if any(_has_futures(c, {}) for c in calls):
            return [self._call(c, {}) for c in calls]
        inputs = [_encode(self.name, self._payload(c, {}), c, {}) for c in calls]
        if not inputs:
            return []
        conn, session_id = self._session()
        futures = [Future(_serde.loads) for _ in inputs]
        conn._submit(session_id, inputs, futures)
        self._track(futures)
        return futures


class _Dependent:
    """Submits a call once all the futures among its arguments are done."""

    def __init__(
        self, target: _Callable, args: tuple[Any, ...], kwargs: dict[str, Any], future: Future
    ) -> None:
        self._target = target
        self._args = args
        self._kwargs = kwargs
        self._future = future
        self._deps = [a for a in (*args, *kwargs.values()) if isinstance(a, AnyFuture)]
        self._lock = threading.Lock()
        self._left = len(self._deps)

    def start(self) -> None:
        for dep in self._deps:
            dep.add_done_callback(self._dep_done)

    def _dep_done(self, dep: AnyFuture) -> None:
        if self._future.done():
            return
        if dep.cancelled():
            self._future._resolve_cancelled()
            return
        exc = dep.exception()
        if exc is not None:
            self._future._set_exception_safe(exc)
            return
        with self._lock:
            self._left -= 1
            if self._left:
                return
        self._submit()

    def _submit(self) -> None:
        future = self._future
        if future.done():  # cancelled by the caller meanwhile
            return
        try:
            args, kwargs = _substitute(self._args, self._kwargs, lambda f: f.result())
            data = _encode(self._target.name, self._target._payload(args, kwargs), args, kwargs)
            conn, session_id = self._target._session()
            conn._submit(session_id, [data], [future])
        except BaseException as e:  # delivered through the future
            future._set_exception_safe(e)
            return
        self._target._track([future])


# ---------------------------------------------------------------- functions


class RemoteFunction(_Callable, Generic[R]):
    """A function whose calls run as Flame tasks. Made by :func:`service`.

    Calling it returns a :class:`flame.Future` at once. Arguments are serialized at call
    time: an argument that cannot be pickled raises :class:`flame.SerializationError`
    before anything is sent.
    """

    def __init__(self, fn: Callable[..., R], options: Options) -> None:
        self._fn = fn
        self._options = options
        self.name = getattr(fn, "__qualname__", None) or repr(fn)
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__qualname__ = self.name
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__module__ = getattr(fn, "__module__", None) or __name__
        self.__wrapped__ = fn
        self._lock = threading.Lock()
        self._runtime: api.Runtime | None = None
        self._session_id: int | None = None
        _serde.register_by_value(self.__module__)

    def __repr__(self) -> str:
        return f"<flame service function {self.__module__}.{self.name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # A task calling another service: the executor gets a fresh, unopened wrapper.
        return (RemoteFunction, (self._fn, self._options))

    def __call__(self, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` as a task; a future of its result."""
        return self._call(args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Future:
        """Same as calling the wrapper: run ``fn(*args, **kwargs)`` as a task."""
        return self._call(args, kwargs)

    def map(self, *iterables: Iterable[Any]) -> list[Future]:
        """Submit one task per item (like the builtin ``map``), in one batch.

        ``f.map(xs)`` runs ``f(x)`` for each ``x``; ``f.map(xs, ys)`` runs ``f(x, y)``
        for each pair. Returns the futures in order.
        """
        return self._map(iterables)

    def local(self, *args: Any, **kwargs: Any) -> R:
        """Call the original function here, in this process."""
        return self._fn(*args, **kwargs)

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        return (args, kwargs)

    def _session(self) -> tuple[Connection, int]:
        rt = api.runtime()
        with self._lock:
            if self._runtime is not rt or self._session_id is None:
                spec = _serde.dumps_function(
                    {"kind": "function", "fn": self._fn}, what=f"function {self.name}"
                )
                self._session_id = self._options.open(rt, self.name, spec)
                self._runtime = rt
            return rt.conn, self._session_id


# ---------------------------------------------------------------- classes


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


def _class_spec(cls: type, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The app spec of a class session; on failure name the argument at fault."""
    try:
        return _serde.dumps_function(
            {"kind": "class", "cls": cls, "args": args, "kwargs": kwargs}, what=f"class {name}"
        )
    except errors.SerializationError:
        labelled = [(f"argument {i}", a) for i, a in enumerate(args)]
        labelled += [(f"argument {k!r}", v) for k, v in kwargs.items()]
        for label, value in labelled:
            _serde.dumps_function(value, what=f"{label} of {name}() ({_serde.describe(value)})")
        raise


def _close_when_idle(rt: api.Runtime, session_id: int, pending: set[Future]) -> None:
    """Close a dropped instance's session once its unfinished calls are done."""
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
            args, kwargs = _substitute(args, kwargs, lambda f: f.result())
        spec = _class_spec(owner._cls, name, args, kwargs)
        rt = api.runtime()
        self._runtime = rt
        self._conn = rt.conn
        self._session_id = owner._options.open(rt, name, spec)
        self._pending: set[Future] = set()
        self._finalizer = weakref.finalize(
            self, _close_when_idle, rt, self._session_id, self._pending
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
