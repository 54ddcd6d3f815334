"""Nested calls inside an executor: waits that give up the slot, and sessions that end
with the task that opened them.

A task that submits tasks and waits for them (``flame.get``, ``Future.result()``,
``flame.wait``, ``as_completed``, ``await``) would hold its executor's slot while the
tasks it waits for cannot be placed: with every slot held by a waiting parent, nothing
progresses. So while the task's thread waits, the executor tells the session manager it is
blocked (:func:`waiting`); the slot is free for others meanwhile, and it is taken back when
the wait ends (the node may run over its slots for a while; see the README). Waits on
other threads of the task do not count: the task itself is still running.

Sessions opened while a task runs (``@flame.service`` calls inside the task open one per
function or instance) are closed when that task ends, however it ends: their unfinished
tasks are cancelled. A later task opens fresh ones.

Outside an executor process nothing here does anything.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any

from flame import _core

__all__ = ["enable", "task_begin", "task_end", "opened", "waiting"]

# The thread that runs tasks in this executor process; None outside executors.
_task_thread: int | None = None
# Nested waits on the task thread (an ``await`` in ``gather`` counts once each).
_depth = 0
# Sessions opened while the current task runs; None when no task runs.
_task_sessions: list[int] | None = None
_lock = threading.Lock()
_NOT_WAITING = contextlib.nullcontext()


def enable() -> None:
    """Called by the executor process: the calling thread runs the tasks."""
    global _task_thread
    _task_thread = threading.get_ident()


class _Wait:
    """The task thread waits: blocked on entering the outermost wait, back on leaving it."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _depth
        _depth += 1
        if _depth == 1:
            _core.executor_blocked(True)

    def __exit__(self, *exc: Any) -> None:
        global _depth
        _depth -= 1
        if _depth == 0:
            _core.executor_blocked(False)


_WAIT = _Wait()


def waiting(futures: Iterable[Any] = ()) -> contextlib.AbstractContextManager[None]:
    """Context for a wait on tasks: frees the executor's slot while the task thread waits.

    With ``futures``, nothing is said when all of them are done already (no real wait).
    """
    if _task_thread is None or threading.get_ident() != _task_thread:
        return _NOT_WAITING
    if futures and all(f.done() for f in futures):
        return _NOT_WAITING
    return _WAIT


def task_begin() -> None:
    """A task starts: sessions opened from now on are its own."""
    global _task_sessions, _depth
    # A wait the last task never left (a coroutine dropped mid-await) ended with it: the
    # executor loop took the slot back then.
    _depth = 0
    with _lock:
        _task_sessions = []


def task_end() -> list[int]:
    """The task ended: the sessions it opened, to close."""
    global _task_sessions
    with _lock:
        ids, _task_sessions = _task_sessions or [], None
    return ids


def opened(session_id: int) -> None:
    """A session was opened in this process: the running task's, if a task runs."""
    with _lock:
        if _task_sessions is not None:
            _task_sessions.append(session_id)
