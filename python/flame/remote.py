"""Calls of a decorated function as Flame tasks: the session a function opens lazily on its
first call (shipping the function, cloudpickled once per session), one task per call, and
arguments that are futures resolved first — without blocking the caller: the task is
submitted when the last of them is done, and fails with the first failure among them. A
future whose result is stored by reference (a large result, see
:class:`flame.objects.ResultMarker`) is passed on as its ``ObjectRef``: the task reads the
object on its own node, and the bytes never come through this process.

The decorator itself is in :mod:`flame.decorator`; decorated classes in
:mod:`flame.remote_class`.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar, Union

from flame import _serde, api, errors
from flame._scheduling import Scheduling
from flame.client import Connection
from flame.futures import Future
from flame.objects import take_noted

__all__ = ["Options", "RemoteFunction"]

R = TypeVar("R")
C = TypeVar("C")
AnyFuture = concurrent.futures.Future
# What ``retry_exceptions`` accepts: a flag, an exception class, or a tuple of them.
RetryExceptions = Union[bool, type[BaseException], tuple[type[BaseException], ...]]


def _retry_spec(value: object) -> bool | tuple[type[BaseException], ...]:
    """``retry_exceptions`` as it goes into the app spec: a bool, or a tuple of classes."""
    if isinstance(value, bool):
        return value
    classes = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise errors.InvalidArgumentError(
            "retry_exceptions must be True, False, an exception class or a tuple of them, "
            f"got {value!r}"
        )
    return tuple(classes) or False


@dataclass(frozen=True)
class Options:
    """Session options of a decorated function or class (see :func:`service`)."""

    max_retries: int = 3
    timeout: float | None = None
    slots: int | None = None
    priority: int = 0
    retry_exceptions: RetryExceptions = False
    max_executors: int | None = None
    min_executors: int | None = None
    weight: float = 1.0
    user: str | None = None

    def __post_init__(self) -> None:
        # Normalized here so that the spec always holds a bool or a tuple of classes.
        object.__setattr__(self, "retry_exceptions", _retry_spec(self.retry_exceptions))
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise errors.InvalidArgumentError(
                f"max_retries must be an int >= 0, got {self.max_retries!r}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise errors.InvalidArgumentError(f"timeout must be > 0 or None, got {self.timeout!r}")
        self.scheduling()  # raises on a bad slots/priority/weight/min/max/user

    def scheduling(self) -> Scheduling:
        """The validated scheduling options."""
        return Scheduling.of(
            slots=self.slots,
            max_executors=self.max_executors,
            min_executors=self.min_executors,
            weight=self.weight,
            priority=self.priority,
            user=self.user,
        )

    def open(self, rt: api.Runtime, name: str, app_spec: bytes) -> int:
        return rt.open_session(
            name,
            app_spec,
            scheduling=self.scheduling(),
            max_retries=self.max_retries,
            timeout=self.timeout,
        )


def _labelled(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"argument {k!r}", v) for k, v in kwargs.items()
    ]


def _encode(
    name: str,
    payload: object,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    conn: Connection | None = None,
) -> bytes:
    """Serialize a call; on failure name the argument that cannot be pickled.

    With ``conn``, a call too large to travel inline (see ``Connection._spill_over``) is
    stored as an object and the input is a reference to it. The refs serialized into the
    input (spilled or passed by the caller) are then collected by
    :func:`flame.objects.take_noted`.
    """
    try:
        if conn is None:
            return _serde.dumps(payload, what=f"the arguments of {name}()")
        return _serde.dumps(
            payload,
            what=f"the arguments of {name}()",
            spill=conn._spill,
            spill_over=conn._spill_over,
        )
    except errors.SerializationError:
        for label, value in _labelled(args, kwargs):
            _serde.dumps(value, what=f"{label} of {name}() ({_serde.describe(value)})")
        raise


def _has_futures(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    # Plain loops: this runs once per call, and generator expressions cost more.
    for a in args:
        if isinstance(a, AnyFuture):
            return True
    for v in kwargs.values():
        if isinstance(v, AnyFuture):
            return True
    return False


def passed(future: AnyFuture) -> Any:
    """What a done future passes to the task it feeds: its ref when its result stayed on
    its node (the bytes go from that node to the task's, never through this process),
    else its value."""
    ref = getattr(future, "_ref", None)
    return ref if ref is not None else future.result()


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
            conn, session_id = self._session()
            data = _encode(self.name, self._payload(args, kwargs), args, kwargs, conn)
            future = Future(_serde.loads)
            future._keep = take_noted()
            conn._submit(session_id, [data], [future])
            self._track([future])
            return future
        # Check now what can be checked, so serialization errors surface at call time.
        p_args, p_kwargs = _substitute(args, kwargs, lambda f: None)
        _encode(self.name, self._payload(p_args, p_kwargs), p_args, p_kwargs)
        take_noted()
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
        if not calls:
            return []
        conn, session_id = self._session()
        inputs = []
        futures = []
        for c in calls:
            data = _encode(self.name, self._payload(c, {}), c, {}, conn)
            inputs.append(data)
            future = Future(_serde.loads)
            future._keep = take_noted()
            futures.append(future)
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
            args, kwargs = _substitute(self._args, self._kwargs, passed)
            conn, session_id = self._target._session()
            payload = self._target._payload(args, kwargs)
            data = _encode(self._target.name, payload, args, kwargs, conn)
            future._keep = take_noted()
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
        rt = api.runtime("a @flame.service function call")
        with self._lock:
            # Reopened after its session was closed (by the task that opened it ending).
            sid = self._session_id
            if self._runtime is not rt or sid is None or not rt.is_open(sid):
                spec = _serde.dumps_function(
                    {"kind": "function", "fn": self._fn, "retry": self._options.retry_exceptions},
                    what=f"function {self.name}",
                )
                sid = self._session_id = self._options.open(rt, self.name, spec)
                self._runtime = rt
            return rt.conn, sid


# ---------------------------------------------------------------- classes
