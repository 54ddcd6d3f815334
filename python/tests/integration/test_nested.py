"""Tasks that submit tasks and wait for them, on a real ``flame-daemon start --slots 2``.

``rec(n)`` waits on two ``rec(n-1)``: without a waiting task giving up its slot, the two
parents hold both executors while their children cannot be placed, and nothing moves
(issue 10, item 3). Each client runs as its own process, as a user's script would, so a
later client shows whether executors were left stuck; the daemon fixture checks that it
stops cleanly and leaves no process behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import executors_of, free_port, start_daemon, stop_daemon

CLIENT = """
import json, sys, time
import flame


@flame.service
def rec(n):
    return 1 if n == 0 else sum(flame.get([rec(n - 1), rec(n - 1)]))


@flame.service
async def arec(n):
    import asyncio

    if n == 0:
        return 1
    return sum(await asyncio.gather(arec(n - 1), arec(n - 1)))


@flame.service
def square(x):
    return x * x


@flame.service
def sleeper(secs):
    time.sleep(secs)
    return secs


@flame.service(max_retries=0)
def wait_on_sleeper(secs):
    return flame.get(sleeper(secs))


def others_open(conn, own):
    return [s.id for s in conn.list_sessions() if s.state == "open" and s.id != own]


def cancel_while_nested(secs, timeout):
    # Cancel a task blocked on a session it opened; seconds until that session closed.
    fut = wait_on_sleeper(secs)
    deadline = time.monotonic() + timeout
    with flame.connect(address) as conn:
        while not others_open(conn, wait_on_sleeper._session_id):
            assert time.monotonic() < deadline, "the task opened no session"
            time.sleep(0.05)
        fut.cancel()
        cancelled = time.monotonic()
        while others_open(conn, wait_on_sleeper._session_id):
            assert time.monotonic() < deadline, "the inner session stayed open"
            time.sleep(0.05)
    return time.monotonic() - cancelled


@flame.service(max_retries=0)
def fail_after_nesting(n):
    square(n)  # opens a session of square inside this task, and leaves it
    raise ValueError("failed after nesting")


address, what, arg, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
flame.init(address)
start = time.monotonic()
if what == "rec":
    value, own = rec(arg).result(timeout=timeout), rec
elif what == "arec":
    value, own = arec(arg).result(timeout=timeout), arec
elif what == "cancel":
    value, own = cancel_while_nested(arg, timeout), wait_on_sleeper
elif what == "square":
    value, own = sum(flame.get([square(i) for i in range(arg)], timeout=timeout)), square
else:
    try:
        value = fail_after_nesting(arg).result(timeout=timeout)
    except ValueError as e:
        value = str(e)
    own = fail_after_nesting
secs = time.monotonic() - start
with flame.connect(address) as conn:
    still_open = [s.id for s in conn.list_sessions() if s.state == "open"]
print(json.dumps({"value": value, "secs": secs, "open": still_open, "own": own._session_id}))
flame.shutdown()
"""


@pytest.fixture
def two_slots(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_daemon(
        "start", "--slots", "2", "--port", str(port), "--state-dir", str(tmp_path / "state"),
        "--python", sys.executable,
        port=port,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_daemon(proc)


def run_client(tmp_path: Path, address: str, what: str, arg: int, timeout: float) -> Any:
    """Run the client script; its JSON report. Fails (and kills it) past ``timeout`` + 30 s."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    cmd = [sys.executable, str(script), address, what, str(arg), str(timeout)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"client {what}({arg}) hung for {timeout + 30} s (deadlock)")
    assert done.returncode == 0, f"client {what}({arg}) failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


class PeakExecutors:
    """Samples the live executor processes of a cluster until stopped; the most seen."""

    def __init__(self, address: str) -> None:
        self.host_port = address.split("://")[-1]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, len(executors_of(self.host_port)))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def test_depth_two_on_two_slots_does_not_deadlock(two_slots: str, tmp_path: Path) -> None:
    report = run_client(tmp_path, two_slots, "rec", 2, timeout=30)
    assert report["value"] == 4


def test_depth_five_on_two_slots_then_a_later_client_runs_promptly(
    two_slots: str, tmp_path: Path
) -> None:
    peak = PeakExecutors(two_slots)
    try:
        report = run_client(tmp_path, two_slots, "rec", 5, timeout=240)
    finally:
        most = peak.stop()
    assert report["value"] == 32
    # The inner sessions were closed as their tasks ended: only the client's own is open.
    assert report["open"] == [report["own"]], report
    print(f"\nrec(5) on 2 slots: {report['secs']:.1f} s, peak {most} executors")
    # Nothing was left stuck: a later client's plain tasks run at once.
    later = run_client(tmp_path, two_slots, "square", 8, timeout=60)
    assert later["value"] == sum(i * i for i in range(8))
    assert later["secs"] < 20, later


def test_awaiting_tasks_on_two_slots_do_not_deadlock(two_slots: str, tmp_path: Path) -> None:
    report = run_client(tmp_path, two_slots, "arec", 3, timeout=60)
    assert report["value"] == 8
    assert report["open"] == [report["own"]], report


def test_sessions_opened_by_a_failing_task_are_closed(two_slots: str, tmp_path: Path) -> None:
    report = run_client(tmp_path, two_slots, "fail", 1, timeout=60)
    assert report["value"] == "failed after nesting"
    assert report["open"] == [report["own"]], report


def test_sessions_opened_by_a_cancelled_task_are_closed(two_slots: str, tmp_path: Path) -> None:
    # The cancelled task's executor is killed: the session it opened is closed when its
    # process ends, not a client lease (60 s) later.
    report = run_client(tmp_path, two_slots, "cancel", 15, timeout=40)
    assert report["value"] < 10, report
    assert report["open"] == [report["own"]], report
