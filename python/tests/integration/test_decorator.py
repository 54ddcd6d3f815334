"""The decorator API on a real embedded cluster: functions, classes, futures, errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import flame
from flame import api


class AppError(Exception):
    """Raised by a service, caught by the client as itself."""


@flame.service
def noop() -> None:
    return None


@flame.service
def add(x: int, y: int) -> int:
    return x + y


@flame.service
def square(x: int) -> int:
    return x * x


@flame.service(max_retries=0)
def fail(message: str) -> None:
    raise AppError(message)


@flame.service
def norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(a))


@flame.service(slots=1)
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flame.service
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flame.service(slots=1)
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.pid = os.getpid()

    def incr(self, by: int = 1) -> tuple[int, int, int]:
        self.n += by
        return self.pid, id(self), self.n

    def _private(self) -> None:
        pass


@flame.service
class Tally:
    def __init__(self) -> None:
        self.calls = 0

    def hit(self) -> tuple[int, int, int]:
        self.calls += 1
        time.sleep(0.001)
        return os.getpid(), id(self), self.calls


@flame.service
class Broken:
    def __init__(self) -> None:
        raise AppError("cannot start")

    def run(self) -> None:
        pass


def test_call_returns_a_future() -> None:
    fut = add(2, 3)
    assert isinstance(fut, flame.Future)
    assert fut.result(timeout=60) == 5
    assert fut.session_id is not None and fut.task_id is not None
    assert add.remote(1, y=1).result(timeout=60) == 2
    assert add.local(4, 5) == 9
    assert add.__name__ == "add"


def test_ten_thousand_noop_calls() -> None:
    start = time.monotonic()
    futures = [noop() for _ in range(10_000)]
    done, not_done = flame.wait(futures, timeout=100)
    elapsed = time.monotonic() - start
    assert not not_done
    assert all(f.exception() is None for f in done)
    print(f"10,000 no-op calls in {elapsed:.2f}s ({10_000 / elapsed:,.0f}/s)")


def test_map_keeps_order() -> None:
    assert flame.get(square.map(range(200)), timeout=60) == [x * x for x in range(200)]
    assert flame.get(add.map([1, 2], [10, 20]), timeout=60) == [11, 22]
    assert square.map([]) == []


def test_numpy_arguments() -> None:
    a = np.arange(1_000_000, dtype=np.float64)
    assert norm(a).result(timeout=60) == pytest.approx(float(np.linalg.norm(a)))


def test_class_keeps_state_per_instance() -> None:
    with Counter(100) as counter:
        results = flame.get([counter.incr() for _ in range(20)], timeout=60)
        assert {(pid, obj) for pid, obj, _ in results} == {results[0][:2]}  # slots=1
        assert sorted(n for _, _, n in results) == list(range(101, 121))
        assert flame.get(counter.incr.map([5]), timeout=60)[0][2] == 125
        assert counter.incr(by=0).result(timeout=60)[2] == 125
        with pytest.raises(AttributeError, match="no public method '_private'"):
            counter._private  # noqa: B018
    with pytest.raises(flame.SessionError):
        counter.incr()


def test_class_instances_are_built_once_per_executor() -> None:
    tally = Tally()
    try:
        results = flame.get([tally.hit() for _ in range(200)], timeout=60)
    finally:
        tally.close()
    calls: dict[tuple[int, int], list[int]] = defaultdict(list)
    for pid, obj, n in results:
        calls[(pid, obj)].append(n)
    assert sum(len(v) for v in calls.values()) == 200
    for ns in calls.values():  # each instance counts its own calls: 1, 2, 3, ...
        assert sorted(ns) == list(range(1, len(ns) + 1))
    assert max(len(ns) for ns in calls.values()) > 1


def test_constructor_failure_is_raised_by_calls() -> None:
    with Broken() as broken:
        with pytest.raises(AppError, match="cannot start") as info:
            broken.run().result(timeout=60)
    assert "__init__" in str(info.value.__cause__)


def test_await_and_gather() -> None:
    async def main() -> tuple[int, list[int]]:
        first = await square(7)
        rest = await asyncio.gather(*(square(i) for i in range(5)))
        return first, rest

    assert asyncio.run(main()) == (49, [0, 1, 4, 9, 16])


def test_get_wait_as_completed() -> None:
    futures = square.map(range(10))
    assert flame.get(futures[3], timeout=60) == 9
    assert flame.get(futures, timeout=60) == [x * x for x in range(10)]
    done, not_done = flame.wait(futures, num_returns=3, timeout=60)
    assert len(done) == 3 and len(not_done) == 7
    assert set(flame.as_completed(futures, timeout=60)) == set(futures)
    pending = slow(5)
    done, not_done = flame.wait([pending], timeout=0.1)
    assert (done, not_done) == ([], [pending])
    with pytest.raises(TimeoutError):
        flame.get([pending], timeout=0.1)
    pending.cancel()


def test_futures_as_arguments() -> None:
    total = add(add(1, 2), y=add(3, 4))
    assert total.result(timeout=60) == 10
    chained = add(sleep_for(0.2), 1)  # returned before its argument is ready
    assert not chained.done()
    assert chained.result(timeout=60) == 1.2


def test_failed_argument_fails_the_call() -> None:
    with pytest.raises(AppError, match="upstream"):
        add(fail("upstream"), 1).result(timeout=60)


def test_user_exception_is_reraised_as_itself() -> None:
    fut = fail("bad input")
    with pytest.raises(AppError, match="bad input") as info:
        fut.result(timeout=60)
    cause = info.value.__cause__
    assert isinstance(cause, flame.RemoteTraceback)
    assert "in fail" in str(cause) and "AppError: bad input" in str(cause)


def test_unpicklable_function_fails_before_sending() -> None:
    lock = threading.Lock()

    @flame.service
    def locked() -> int:
        with lock:
            return 1

    before = len(api.runtime().conn.list_sessions())
    with pytest.raises(flame.SerializationError, match="locked"):
        locked()
    assert len(api.runtime().conn.list_sessions()) == before


def test_unpicklable_argument_fails_at_call_time() -> None:
    with pytest.raises(flame.SerializationError, match="argument 0 of add.*lock"):
        add(threading.Lock(), 1)
    with pytest.raises(flame.SerializationError, match="argument 'y' of add"):
        add(1, y=threading.Lock())
    with pytest.raises(flame.SerializationError, match="argument 1 of add"):
        add(add(1, 1), threading.Lock())


def test_lambda_arguments_use_cloudpickle() -> None:
    @flame.service
    def apply(fn, x):  # type: ignore[no-untyped-def]
        return fn(x)

    assert apply(lambda v: v * 3, 5).result(timeout=60) == 15


def test_timeout_fails_the_task() -> None:
    @flame.service(timeout=0.5, max_retries=0)
    def hang() -> None:
        time.sleep(3)

    with pytest.raises(flame.TaskTimeoutError):
        hang().result(timeout=60)


def test_cancel_a_queued_task() -> None:
    first = sleep_for(1.0)
    queued = [sleep_for(0.0) for _ in range(50)]
    assert queued[-1].cancel()
    with pytest.raises(flame.CancelledError):
        queued[-1].result(timeout=60)
    assert queued[-1].cancelled()
    assert first.result(timeout=60) == 1.0
    assert flame.get(queued[:-1], timeout=60) == [0.0] * 49


def test_init_twice() -> None:
    flame.init()  # same (embedded): nothing happens
    with pytest.raises(flame.InvalidArgumentError, match="already initialized"):
        flame.init("127.0.0.1:1")


def test_cluster_info() -> None:
    info = flame.cluster_info()
    assert isinstance(info, dict)
    assert isinstance(flame.nodes(), list)


_SCRIPT = """\
import flame

flame.init(slots=1)


@flame.service
def work(x):
    y = x + 1
    raise ValueError(f"boom {y}")  # the source line the traceback shows


try:
    work(1).result(timeout=60)
except ValueError as e:
    print(e.__cause__)
flame.shutdown()
"""


def test_a_script_s_remote_traceback_names_its_file_line_and_source(tmp_path: Path) -> None:
    # cloudpickle renames by-value code's file to "<dynamic-code>": tracebacks had no source.
    script = tmp_path / "user_script.py"
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 0, run.stderr
    assert f'File "{script}", line 9, in work' in run.stdout, run.stdout
    assert "the source line the traceback shows" in run.stdout
    assert "<dynamic-code>" not in run.stdout
