"""flame._blocking without a daemon: which waits count, and which sessions a task owns."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator

import pytest

from flame import _blocking, _core


@pytest.fixture
def task_thread() -> Iterator[None]:
    """This thread plays an executor's task thread for the test."""
    _blocking.enable()
    try:
        yield
    finally:
        _blocking._task_thread = None
        _blocking._depth = 0


def test_outside_an_executor_nothing_is_told() -> None:
    assert _core.executor_blocked(True) is False  # no executor loop on this thread
    assert _core.executor_blocked(False) is False
    assert _blocking.waiting() is _blocking._NOT_WAITING


def test_only_the_task_thread_waits_and_only_on_unfinished_futures(task_thread: None) -> None:
    assert _blocking.waiting() is _blocking._WAIT
    done: concurrent.futures.Future[int] = concurrent.futures.Future()
    done.set_result(1)
    assert _blocking.waiting([done]) is _blocking._NOT_WAITING
    assert _blocking.waiting([done, concurrent.futures.Future()]) is _blocking._WAIT
    seen = []
    other = threading.Thread(target=lambda: seen.append(_blocking.waiting()))
    other.start()
    other.join()
    assert seen == [_blocking._NOT_WAITING]
    with _blocking.waiting(), _blocking.waiting():
        assert _blocking._depth == 2
    assert _blocking._depth == 0


def test_a_task_owns_the_sessions_opened_while_it_runs() -> None:
    _blocking.opened(1)  # no task runs: the process's own, closed at shutdown
    _blocking.task_begin()
    _blocking.opened(2)
    _blocking.opened(3)
    assert _blocking.task_end() == [2, 3]
    _blocking.opened(4)
    assert _blocking.task_end() == []
