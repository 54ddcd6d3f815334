"""Faults on a real embedded cluster: executors killed mid-task, tasks that raise, time out
or are cancelled, sessions closed under queued calls, constructors that fail, executors that
flood their output, and payloads over the limit. Nothing may be lost or delivered twice.

Tasks count their own attempts with marker files in a temporary directory passed to them:
an executor killed by SIGKILL cannot report anything else.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import executors_of, wait_until_gone

import flame
from flame import _core, api


class Flaky(Exception):
    """Raised by a task on purpose."""


class ConfigError(Exception):
    """Raised by a service class's constructor."""


def attempt(marker_dir: str) -> int:
    """Record one attempt of the calling task; how many there were, this one included."""
    fd, _ = tempfile.mkstemp(prefix="attempt-", dir=marker_dir)
    os.close(fd)
    return len(os.listdir(marker_dir))


def attempts(marker_dir: Path) -> int:
    return len(list(marker_dir.iterdir()))


@pytest.fixture
def markers(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "markers"
    path.mkdir()
    yield path


def count_completions(fut: flame.Future) -> list[int]:
    """A list whose length is how many times ``fut`` was resolved (callbacks run)."""
    calls: list[int] = []
    fut.add_done_callback(lambda _: calls.append(1))
    return calls


# ---------------------------------------------------------------- services under test


@flame.service(max_retries=2)
def die_once(marker_dir: str, x: int) -> int:
    if attempt(marker_dir) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


@flame.service(max_retries=1)
def always_die(marker_dir: str) -> None:
    attempt(marker_dir)
    os.kill(os.getpid(), signal.SIGKILL)


@flame.service(max_retries=2)
def raise_value_error(marker_dir: str) -> None:
    attempt(marker_dir)
    raise ValueError("not retried by default")


@flame.service(max_retries=2, retry_exceptions=ValueError)
def retried_raise(marker_dir: str, exc: type[Exception], until: int) -> int:
    """Raise ``exc`` on the first ``until`` attempts; then return the attempt number."""
    n = attempt(marker_dir)
    if n <= until:
        raise exc(f"attempt {n}")
    return n


@flame.service(max_retries=3, retry_exceptions=True)
def retry_anything(marker_dir: str) -> int:
    n = attempt(marker_dir)
    if n < 3:
        raise Flaky(f"attempt {n}")
    return n


@flame.service(timeout=0.5, max_retries=2, slots=1)
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@flame.service(slots=1, max_retries=0)
def announce_and_sleep(marker_dir: str, seconds: float) -> int:
    """Write this executor's pid into ``marker_dir`` (so the test knows the task runs)."""
    Path(marker_dir, f"pid-{os.getpid()}").touch()
    time.sleep(seconds)
    return os.getpid()


@flame.service(slots=1)
class Sleeper:
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@flame.service
class Misconfigured:
    def __init__(self) -> None:
        raise ConfigError("no config file")

    def run(self, x: int) -> int:
        return x


@flame.service(max_retries=0)
def loud(mb: int) -> int:
    """Write ``mb`` MB to each of stdout and stderr: 1 KB lines, then one 1 MB line."""
    line = "x" * 1023 + "\n"
    for stream in (sys.stdout, sys.stderr):
        for _ in range((mb - 1) * 1024):
            stream.write(line)
        stream.write("y" * (1 << 20))  # no newline: the reader must bound a partial line
        stream.flush()
    return mb


@flame.service
def square(x: int) -> int:
    return x * x


@flame.service
def blob(n: int) -> bytes:
    return b"x" * n


@flame.service
def length(data: bytes) -> int:
    return len(data)


# ---------------------------------------------------------------- executors that die


def test_killed_executor_reruns_the_task_once(markers: Path) -> None:
    fut = die_once(str(markers), 7)
    calls = count_completions(fut)
    assert fut.result(timeout=30) == 49
    assert attempts(markers) == 2 and fut.attempts == 2
    time.sleep(0.2)  # a duplicate completion would arrive about now
    assert calls == [1]


def test_executor_that_always_dies_fails_after_max_retries(markers: Path) -> None:
    fut = always_die(str(markers))
    with pytest.raises(flame.ExecutorLostError) as info:
        fut.result(timeout=30)
    message = str(info.value)
    assert f"task {fut.task_id}" in message and "2 attempt" in message, message
    assert info.value.task_id == fut.task_id
    assert attempts(markers) == 2


# ---------------------------------------------------------------- user exceptions


def test_user_exception_is_not_retried_by_default(markers: Path) -> None:
    with pytest.raises(ValueError, match="not retried by default"):
        raise_value_error(str(markers)).result(timeout=30)
    assert attempts(markers) == 1


def test_retry_exceptions_reruns_matching_exceptions(tmp_path: Path) -> None:
    recovers, exhausted, other = (tmp_path / d for d in ("recovers", "exhausted", "other"))
    for d in (recovers, exhausted, other):
        d.mkdir()
    ok = retried_raise(str(recovers), ValueError, 1)
    always = retried_raise(str(exhausted), ValueError, 99)
    wrong_type = retried_raise(str(other), KeyError, 99)

    assert ok.result(timeout=30) == 2 and ok.attempts == 2
    with pytest.raises(ValueError, match="attempt 3"):  # the last attempt's exception
        always.result(timeout=30)
    assert attempts(exhausted) == 3  # max_retries=2: three attempts in all
    with pytest.raises(KeyError):
        wrong_type.result(timeout=30)
    assert attempts(other) == 1


def test_retry_exceptions_true_reruns_any_exception(markers: Path) -> None:
    assert retry_anything(str(markers)).result(timeout=30) == 3


# ---------------------------------------------------------------- timeouts and cancel


def test_timeout_kills_the_task_and_the_session_goes_on() -> None:
    start = time.monotonic()
    with pytest.raises(flame.TaskTimeoutError):
        nap(30).result(timeout=30)
    assert time.monotonic() - start < 10
    assert isinstance(nap(0).result(timeout=30), int)  # a fresh executor serves the session


def test_cancel_a_running_task(markers: Path, cluster: str) -> None:
    fut = announce_and_sleep(str(markers), 60)
    deadline = time.monotonic() + 30
    while not list(markers.iterdir()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    pid = int(next(markers.iterdir()).name.split("-")[1])

    start = time.monotonic()
    assert fut.cancel()
    with pytest.raises(flame.CancelledError):
        fut.result(timeout=10)
    assert time.monotonic() - start < 5 and fut.cancelled()
    # The executor running it was killed; another one serves the session.
    host_port = cluster.split("://")[-1]
    assert not wait_until_gone(lambda: [p for p in executors_of(host_port) if p[0] == pid])
    assert announce_and_sleep(str(markers), 0).result(timeout=30) != pid


def test_closing_an_instance_cancels_its_queued_calls() -> None:
    sleeper = Sleeper()
    futs = [sleeper.nap(1.0) for _ in range(6)]
    time.sleep(0.3)  # the first call is running, the others queued
    start = time.monotonic()
    sleeper.close()
    done, not_done = flame.wait(futs, timeout=10)
    assert not not_done and time.monotonic() - start < 5
    cancelled = [f for f in futs if f.cancelled()]
    assert len(cancelled) >= 5, [f.exception() if not f.cancelled() else "cancelled" for f in futs]
    with pytest.raises(flame.CancelledError):
        futs[-1].result()


# ---------------------------------------------------------------- failing sessions


def test_constructor_failure_fails_every_pending_call() -> None:
    obj = Misconfigured()
    futs = obj.run.map(range(20))
    start = time.monotonic()
    done, not_done = flame.wait(futs, timeout=30)
    assert not not_done, "calls left hanging after the constructor failed"
    assert time.monotonic() - start < 10
    for f in futs:
        assert isinstance(f.exception(), ConfigError), f.exception()
    obj.close()


def test_executor_flooding_stdout_and_stderr() -> None:
    fut = loud(10)  # 10 MB on each stream
    assert fut.result(timeout=60) == 10
    assert flame.get(square.map(range(20)), timeout=30) == [x * x for x in range(20)]
    assert flame.cluster_info()


# ---------------------------------------------------------------- payload limits


class Inflate(flame.FlameService):
    """Answers ``n`` bytes for an input of ``str(n)``."""

    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        return b"x" * int(ctx.input)


LIMIT = 1 << 20


def test_payload_limits_low_level() -> None:
    """A second embedded cluster with a 1 MiB limit, driven through the low-level API."""
    with tempfile.TemporaryDirectory(prefix="flame-small-") as state:
        cluster = _core.LocalCluster(1, state, sys.executable, max_payload_bytes=LIMIT)
        try:
            with flame.connect(cluster.address) as conn:
                assert conn.max_payload == LIMIT
                conn.register_application("inflate", Inflate)
                with conn.create_session("inflate") as session:
                    with pytest.raises(flame.PayloadTooLargeError, match=str(LIMIT)):
                        session.run_task(b"0" * (LIMIT + 1))  # refused before sending
                    too_big = session.run_task(str(LIMIT + 1).encode())
                    with pytest.raises(flame.PayloadTooLargeError, match=str(LIMIT)):
                        too_big.result(timeout=30)
                    assert session.run_task(b"10").result(timeout=30) == b"x" * 10
        finally:
            cluster.stop()
        assert not wait_until_gone(lambda: executors_of(cluster.address.split("://")[-1]))


def test_payload_limits_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    # What flame.init(max_payload=...) starts, swapped in for the session-wide cluster.
    rt = api._start_embedded(1, None, max_payload=LIMIT, client_lease=5.0)
    monkeypatch.setattr(api, "_runtime", rt)
    try:
        assert rt.conn.max_payload == LIMIT
        # Arguments over the limit travel as an object instead of inline: never refused.
        assert length(b"y" * 4 * LIMIT).result(timeout=30) == 4 * LIMIT
        # A result over the limit stays on its node as an object (#12; over
        # result_object_mb, 1 MiB here too) and is fetched from there: never refused.
        assert blob(LIMIT + 1).result(timeout=30) == b"x" * (LIMIT + 1)
        assert blob(10).result(timeout=30) == b"x" * 10  # the session still works
    finally:
        rt.close()
