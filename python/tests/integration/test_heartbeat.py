"""Executor heartbeats against a real ``flame-daemon start`` whose executors must answer
within ``executor_timeout_ms``: a frozen executor (SIGSTOP) is declared lost once it misses
the deadline, its tasks run elsewhere and its process is killed and reaped; a long task
that keeps an executor busy, but not frozen, is never mistaken for one.

Tasks leave a mark file per task, so a task can tell its first attempt from a re-run."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import executors_of, free_port, start_daemon, stop_daemon, wait_until_gone

import flame

TIMEOUT = 2.0  # executor_timeout_ms / 1000
# Start-up of the replacement executor and the result path, on a loaded machine.
MARGIN = 8.0


class Beacon(flame.FlameService):
    """Input ``dir|seconds``: on a task's first attempt, leave ``dir/task-<id>`` holding
    the pid and keep the CPU busy for ``seconds``; on a re-run return at once. Answers the
    pid."""

    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        marks, seconds = ctx.input.decode().split("|")
        mark = Path(marks, f"task-{ctx.task_id}")
        if not mark.exists():
            mark.write_text(str(os.getpid()))
            end = time.monotonic() + float(seconds)
            while time.monotonic() < end:  # holds the GIL most of the time, unlike sleep
                sum(range(1000))
        return str(os.getpid()).encode()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "flame.toml"
    config.write_text(f"executor_timeout_ms = {int(TIMEOUT * 1000)}\n")
    port = free_port()
    proc = start_daemon(
        "start", "--host", "127.0.0.1", "--port", str(port), "--slots", "2", "--no-http",
        "--state-dir", str(tmp_path / "state"), "--python", sys.executable,
        "--config", str(config), port=port,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_daemon(proc)


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


def first_mark(marks: Path) -> tuple[int, int]:
    """(task id, pid) of the first task that started; waits for it."""
    deadline = time.monotonic() + 30
    while True:
        found = [m for m in marks.iterdir() if m.read_text()]
        if found:
            return int(found[0].name.split("-")[1]), int(found[0].read_text())
        assert time.monotonic() < deadline, "no task started"
        time.sleep(0.02)


def test_a_frozen_executor_is_killed_and_its_tasks_run_elsewhere(daemon: str, marks: Path) -> None:
    with flame.connect(daemon) as conn:
        conn.register_application("beacon", Beacon)
        # One executor at a time: the second task is sent ahead, behind the first.
        session = conn.create_session("beacon", slots=1, max_retries=1)
        futs = session.run_tasks([f"{marks}|60".encode(), f"{marks}|0".encode()])
        task, pid = first_mark(marks)
        assert task == futs[0].task_id
        os.kill(pid, signal.SIGSTOP)
        try:
            frozen = time.monotonic()
            pids = [int(f.result(timeout=TIMEOUT + 3 * MARGIN)) for f in futs]
            took = time.monotonic() - frozen
            assert took < TIMEOUT + MARGIN, f"the tasks moved {took:.1f} s after the freeze"
            assert pid not in pids, (pid, pids)
            # The running task's attempt counted; the one behind it had not started.
            assert [f.attempts for f in futs] == [2, 1]
            # The stopped process was killed and reaped, with the daemon still running.
            left = wait_until_gone(lambda: [p for p in executors_of(daemon) if p[0] == pid])
            assert not left, f"the frozen executor is still there: {left}"
            session.close()
        finally:
            try:
                os.kill(pid, signal.SIGCONT)  # if it is still there, let it go down
            except ProcessLookupError:
                pass


def test_a_long_busy_task_is_not_mistaken_for_a_frozen_executor(daemon: str, marks: Path) -> None:
    with flame.connect(daemon) as conn:
        conn.register_application("beacon", Beacon)
        session = conn.create_session("beacon", slots=1, max_retries=0)
        fut = session.run_task(f"{marks}|{2 * TIMEOUT + 1}".encode())
        _, pid = first_mark(marks)
        # max_retries=0: declared lost, it would fail with ExecutorLostError.
        assert int(fut.result(timeout=60)) == pid
        assert fut.attempts == 1
        session.close()
