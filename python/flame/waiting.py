"""Waiting on futures: ``flame.get``, ``flame.wait`` and ``flame.as_completed``, each with
an optional progress bar.

A bar (``progress=True``, a description string, or a dict of ``tqdm`` options) is a
``tqdm.auto`` bar: a widget in Jupyter, text on a terminal. The waiting thread advances it
as futures finish, through :func:`concurrent.futures.as_completed`, which sleeps on a
condition until the next one is done — there is no polling loop, and the pump thread that
resolves futures never touches the bar.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Union, overload

from flame import _blocking, errors
from flame.objects import ObjectRef

__all__ = ["Progress", "as_completed", "get", "wait"]

AnyFuture = concurrent.futures.Future
# ``True``: a bar; a string: a bar with that description; a mapping: tqdm's own options
# (``desc``, ``file``, ``leave``, ...); ``False``/``None``: no bar.
Progress = Union[bool, str, Mapping[str, Any], None]


def _check_futures(futures: Iterable[Any]) -> list[AnyFuture]:
    items = list(futures)
    for f in items:
        if not isinstance(f, AnyFuture):
            raise TypeError(f"expected flame.Future objects, got {type(f).__qualname__}")
    return items


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _bar_options(progress: Progress) -> dict[str, Any] | None:
    """tqdm options for ``progress``, or ``None`` when no bar was asked for."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return {}
    if isinstance(progress, str):
        return {"desc": progress}
    if isinstance(progress, Mapping):
        return dict(progress)
    raise errors.InvalidArgumentError(
        "progress must be True/False, a description string or a dict of tqdm options, "
        f"got {type(progress).__qualname__}"
    )


def _open_bar(options: dict[str, Any], total: int, default_desc: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # a declared dependency; only a broken install lacks it
        raise errors.FlameError(
            f"progress bars need the 'tqdm' package, which cannot be imported: {e}"
        ) from None
    options.setdefault("desc", default_desc)
    options.setdefault("unit", "task")
    return tqdm(total=total, **options)


def _bar(progress: Progress, total: int, default_desc: str) -> Any:
    """A tqdm bar for ``progress``, or ``None`` when no bar was asked for."""
    options = _bar_options(progress)
    return None if options is None else _open_bar(options, total, default_desc)


def _advance(
    bar: Any, items: list[AnyFuture], deadline: float | None, count: int
) -> Iterator[AnyFuture]:
    """Yield futures of ``items`` as they finish, at most ``count``, advancing ``bar``.

    Raises:
        flame.WaitTimeoutError: ``deadline`` passed first.
    """
    if count == 0:
        return
    seen = 0
    try:
        for fut in concurrent.futures.as_completed(items, _remaining(deadline)):
            bar.update(1)
            yield fut
            seen += 1
            if seen >= count:
                return
    except concurrent.futures.TimeoutError as e:
        raise errors.WaitTimeoutError(
            f"{len(items) - seen} of {len(items)} futures unfinished: {e}"
        ) from None


@overload
def get(futures: AnyFuture, timeout: float | None = None, *, progress: Progress = False) -> Any: ...
@overload
def get(
    futures: Sequence[AnyFuture], timeout: float | None = None, *, progress: Progress = False
) -> list[Any]: ...


def get(
    futures: AnyFuture | Sequence[AnyFuture],
    timeout: float | None = None,
    *,
    progress: Progress = False,
) -> Any:
    """The result of a future, or the results of a list of futures in the same order.

    Args:
        futures: One future, or a sequence of them (or an :class:`flame.ObjectRef`,
            whose value is returned).
        timeout: Seconds to wait in all; ``None`` waits as long as it takes.
        progress: Show a progress bar of finished futures (see :data:`Progress`). With a
            bar, every future is waited for before a failure is raised.

    Raises:
        TimeoutError: not every result was ready in time.
        Exception: the first failed task's exception, in list order (a user exception
            as itself, with the remote traceback as its cause).
        flame.InvalidArgumentError: ``progress`` is not a valid value.
    """
    if isinstance(futures, ObjectRef):
        return futures.get()
    if isinstance(futures, AnyFuture):
        futures = [futures]
        single = True
    else:
        single = False
    items = _check_futures(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = _bar(progress, len(items), "flame.get")
    # Inside an executor's task, the slot is free while this waits (see flame._blocking).
    with _blocking.waiting(items):
        if bar is not None:
            with bar:
                for _ in _advance(bar, items, deadline, len(items)):
                    pass
        results = [f.result(_remaining(deadline)) for f in items]
    return results[0] if single else results


def wait(
    futures: Sequence[AnyFuture],
    num_returns: int | None = None,
    timeout: float | None = None,
    *,
    progress: Progress = False,
) -> tuple[list[AnyFuture], list[AnyFuture]]:
    """Wait until ``num_returns`` of ``futures`` are done, or the timeout passes.

    Args:
        futures: The futures to watch.
        num_returns: How many to wait for (default: all of them).
        timeout: Seconds to wait at most; ``None`` means no limit.
        progress: Show a progress bar up to ``num_returns`` (see :data:`Progress`).

    Returns:
        ``(done, not_done)``: ``done`` holds at most ``num_returns`` finished futures,
        ``not_done`` the rest; both keep the order of ``futures``. A failed task counts
        as done. Never raises a task's exception.
    """
    items = _check_futures(futures)
    n = len(items) if num_returns is None else num_returns
    if not 0 <= n <= len(items):
        raise errors.InvalidArgumentError(
            f"num_returns must be between 0 and {len(items)}, got {num_returns}"
        )
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = _bar(progress, n, "flame.wait")
    if bar is not None:
        with bar, _blocking.waiting(items):
            try:
                for _ in _advance(bar, items, deadline, n):
                    pass
            except errors.WaitTimeoutError:
                pass  # wait() reports a timeout through not_done
    else:
        with _blocking.waiting(items):
            _wait_plain(items, n, deadline)
    done: list[AnyFuture] = []
    not_done: list[AnyFuture] = []
    for f in items:
        (done if f.done() and len(done) < n else not_done).append(f)
    return done, not_done


def _wait_plain(items: list[AnyFuture], n: int, deadline: float | None) -> None:
    while True:
        pending = [f for f in items if not f.done()]
        if len(items) - len(pending) >= n:
            return
        left = _remaining(deadline)
        if left == 0.0:
            return
        return_when = (
            concurrent.futures.ALL_COMPLETED
            if n == len(items)
            else concurrent.futures.FIRST_COMPLETED
        )
        concurrent.futures.wait(pending, left, return_when)


def as_completed(
    futures: Iterable[AnyFuture],
    timeout: float | None = None,
    *,
    progress: Progress = False,
) -> Iterator[AnyFuture]:
    """Yield the futures as they finish (failed and cancelled ones included).

    Args:
        futures: The futures to watch.
        timeout: Seconds to wait in all; ``None`` means no limit.
        progress: Show a progress bar of finished futures (see :data:`Progress`); it
            opens at the first iteration and closes when the iteration ends or the
            generator is closed.

    Raises:
        TimeoutError: some futures were still unfinished after ``timeout`` seconds.
        TypeError: an item is not a future (raised here, before iterating).
        flame.InvalidArgumentError: ``progress`` is not a valid value (raised here).
    """
    items = _check_futures(futures)
    options = _bar_options(progress)
    deadline = None if timeout is None else time.monotonic() + timeout
    return _as_completed(items, options, deadline)


def _as_completed(
    items: list[AnyFuture], options: dict[str, Any] | None, deadline: float | None
) -> Iterator[AnyFuture]:
    if options is not None:
        with _open_bar(options, len(items), "flame.as_completed") as bar:
            yield from _waits(_advance(bar, items, deadline, len(items)), items)
        return
    try:
        yield from _waits(concurrent.futures.as_completed(items, _remaining(deadline)), items)
    except concurrent.futures.TimeoutError as e:
        if isinstance(e, TimeoutError):
            raise
        raise errors.WaitTimeoutError(str(e)) from None


def _waits(it: Iterator[AnyFuture], items: list[AnyFuture]) -> Iterator[AnyFuture]:
    """``it``, each wait for its next item counted as a wait (see :mod:`flame._blocking`);
    the time the consumer spends between items is not. The futures done at the start come
    first without a wait."""
    ready = sum(1 for f in items if f.done())
    while True:
        if ready > 0:
            ready -= 1
            fut = next(it, None)
        else:
            with _blocking.waiting():
                fut = next(it, None)
        if fut is None:
            return
        yield fut
