"""``@flame.service``: run a function's calls, or a class's method calls, as Flame tasks."""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar, overload

from flame import _serde
from flame.remote import Options, RemoteFunction, RetryExceptions
from flame.remote_class import RemoteClass

__all__ = ["service"]

R = TypeVar("R")
C = TypeVar("C")


# A class is callable too: it must match the first overload, not the second (mypy picks the
# first that fits), so the overlap mypy reports is intended.
@overload
def service(target: type[C]) -> RemoteClass[C]: ...  # type: ignore[overload-overlap]
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
    retry_exceptions: RetryExceptions = False,
    max_executors: int | None = None,
    min_executors: int | None = None,
    weight: float = 1.0,
    user: str | None = None,
) -> Callable[[Any], Any]: ...


def service(
    target: Any = None,
    *,
    max_retries: int = 3,
    timeout: float | None = None,
    slots: int | None = None,
    priority: int = 0,
    retry_exceptions: RetryExceptions = False,
    max_executors: int | None = None,
    min_executors: int | None = None,
    weight: float = 1.0,
    user: str | None = None,
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

    A task whose executor dies (a crash, a kill, out of memory) runs again on another
    executor, up to ``max_retries`` times; then it fails with
    :class:`flame.ExecutorLostError`. An exception raised by the task's own code is not
    retried, unless ``retry_exceptions`` says so::

        @flame.service(max_retries=2, retry_exceptions=(TimeoutError, ConnectionError))
        def fetch(url): ...

    Args:
        max_retries: Re-runs of a task whose executor died, or that raised an exception
            matching ``retry_exceptions``.
        timeout: Per-task time limit in seconds (``None``: none); an overrun fails the
            task with :class:`flame.TaskTimeoutError`.
        slots: The most executors the session may use (``None`` or 0: no limit); the
            older name of ``max_executors``.
        priority: Higher runs first when sessions compete for executors; equal priorities
            share by ``weight``.
        retry_exceptions: Which exceptions raised by the task re-run it (while
            ``max_retries`` allows): ``False`` (default) none, ``True`` any, or an
            exception class or tuple of classes (matched like ``except``). The last
            attempt's exception is raised. A class's ``__init__`` failing is never retried.
        max_executors: The most executors the session may hold (``None`` or 0: no limit).
        min_executors: Executors the session holds from the moment it opens, even idle.
        weight: The session's share relative to others of the same priority (> 0).
        user: The tenant the session counts against when the daemon shares per tenant
            (default: this client).

    Raises:
        flame.InvalidArgumentError: an option is out of range.
    """
    options = Options(
        max_retries=max_retries,
        timeout=timeout,
        slots=slots,
        priority=priority,
        retry_exceptions=retry_exceptions,
        max_executors=max_executors,
        min_executors=min_executors,
        weight=weight,
        user=user,
    )

    def wrap(obj: Any) -> Any:
        if inspect.isclass(obj):
            return RemoteClass(obj, options)
        if callable(obj):
            return RemoteFunction(obj, options)
        raise TypeError(f"@flame.service needs a function or a class, got {_serde.describe(obj)}")

    return wrap if target is None else wrap(target)


# ---------------------------------------------------------------- calls
