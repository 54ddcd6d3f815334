"""Where tasks run and how they stop, each test on an embedded cluster of its own size:
long tasks spread over idle slots instead of queuing behind one another, and closing a
session stops its tasks at once (the executors running them are killed, nothing sent ahead
starts later, and the recorded states and times are true).

Tasks keep a journal: a line when they start and one when they end, with their pid and the
time, so a test can tell what ran where, and that nothing ran after a close."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _procs import executors_of, wait_until_gone

import flame
from flame import _core


class Journal(flame.FlameService):
    """Input ``path|seconds``: journal the start, sleep, journal the end; answers the pid."""

    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        path, seconds = ctx.input.decode().split("|")
        with open(path, "a") as f:
            f.write(f"start {ctx.task_id} {os.getpid()} {time.time()}\n")
        time.sleep(float(seconds))
        with open(path, "a") as f:
            f.write(f"end {ctx.task_id} {os.getpid()} {time.time()}\n")
        return str(os.getpid()).encode()


@contextmanager
def cluster(slots: int, tmp_path: Path) -> Iterator[tuple[flame.Connection, str]]:
    """A connection to a fresh embedded cluster of ``slots``, and its host:port."""
    state = tmp_path / f"state-{slots}"
    state.mkdir()
    # A long release delay: executors stay where the test put them.
    local = _core.LocalCluster(slots, str(state), sys.executable, release_delay=60.0)
    host_port = local.address.split("://")[-1]
    try:
        with flame.connect(local.address) as conn:
            conn.register_application("journal", Journal)
            yield conn, host_port
    finally:
        local.stop()
    assert not wait_until_gone(lambda: executors_of(host_port))


def wait_for(check, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found


# ---------------------------------------------------------------- long tasks and idle slots

DURATION = 1.5  # seconds per long task
MARGIN = 1.0  # for binding, the result path and a loaded machine; serializing costs DURATION


@pytest.mark.parametrize("slots", [2, 4])
def test_long_tasks_take_one_round_per_slot(slots: int, tmp_path: Path) -> None:
    with cluster(slots, tmp_path) as (conn, _):
        # Start every executor first, so the rounds below time placement, not start-up.
        with conn.create_session("journal", slots=0) as warm:
            flame.wait(warm.run_tasks([f"{tmp_path / 'warm'}|0.3".encode()] * slots), timeout=60)
        wait_for(lambda: len(conn.list_executors()) == slots, f"{slots} executors")
        for n in (2, 4, 8):
            # A new session each time: its task durations are not known yet.
            with conn.create_session("journal", slots=0) as session:
                start = time.monotonic()
                futs = session.run_tasks([f"{tmp_path / f'j{n}'}|{DURATION}".encode()] * n)
                pids = [int(f.result(timeout=60)) for f in futs]
                took = time.monotonic() - start
            rounds = math.ceil(n / slots)
            assert took < rounds * DURATION + MARGIN, (
                f"{n} tasks of {DURATION} s on {slots} slots took {took:.2f} s "
                f"(expected ~{rounds * DURATION} s); pids {pids}"
            )
            if n <= slots:
                assert len(set(pids)) == n, f"{n} tasks shared executors: {pids}"


# ---------------------------------------------------------------- closing a session


def test_closing_a_session_stops_its_running_and_queued_tasks(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with cluster(1, tmp_path) as (conn, host_port):
        # One slot: the second task is sent ahead, behind the first, on the same executor.
        session = conn.create_session("journal", slots=1, max_retries=0)
        futs = session.run_tasks([f"{journal}|20".encode()] * 2)
        first = wait_for(lambda: journal.exists() and journal.read_text(), "the first task")
        _, task, pid, _ = first.split()
        assert int(task) == futs[0].task_id

        closed = time.time()
        session.close()
        for f in futs:
            with pytest.raises(flame.CancelledError):
                f.result(timeout=5)
        # The executor running the first task is gone (killed, reaped) ...
        gone = wait_until_gone(lambda: [p for p in executors_of(host_port) if p[0] == int(pid)])
        assert not gone, f"the executor of a closed session still runs: {gone}"
        # ... and nothing ran after the close: no end, no start of the task sent ahead.
        assert journal.read_text() == first

        running, behind = (conn.get_task(session.id, f.task_id) for f in futs)
        for t in (running, behind):
            assert t["state"] == "cancelled", t
            assert abs(t["finished_ms"] / 1000 - closed) < 3, (t, closed)
        assert running["started_ms"] is not None and running["attempts"] == 1, running
        # It never started: no start time, no executor, no attempt.
        assert behind["started_ms"] is None and behind["executor_id"] is None, behind
        assert behind["attempts"] == 0, behind
