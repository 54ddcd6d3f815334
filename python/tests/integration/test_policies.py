"""Scheduling policies on the embedded cluster (4 slots, the default policies: priority,
fair share, data-aware): a short job is not stuck behind a long one, a higher priority is
served first, and ``min_executors`` / ``max_executors`` hold. Bounds are generous (the
machine may be loaded); each test contrasts with what would happen without the policy.
"""

from __future__ import annotations

import os
import time

import pytest

import flame
from flame import api

SLOTS = 4  # the conftest cluster


@flame.service
def long_task(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@flame.service
def short_task(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@flame.service(priority=10)
def urgent_task(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@flame.service(max_executors=2)
def capped_task(seconds: float) -> tuple[int, float, float]:
    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start, time.time()


@flame.service(min_executors=2)
class Reserved:
    def __init__(self) -> None:
        self.pid = os.getpid()

    def pid_of(self) -> int:
        return self.pid


def _executors(session_id: int) -> int:
    """Executors bound to a session right now, as the daemon reports it."""
    return api.runtime().conn._conn.get_session(session_id).executors


def _run(fn: flame.RemoteFunction, n: int, seconds: float) -> float:
    start = time.monotonic()
    flame.get(fn.map([seconds] * n), timeout=60)
    return time.monotonic() - start


def test_a_short_job_gets_its_share_while_a_long_one_runs() -> None:
    standalone = _run(short_task, 50, 0.005)
    # A: 2,000 tasks of 20 ms, 10 s of work on 4 executors; it holds every executor.
    a = long_task.map([0.02] * 2000)
    flame.wait(a, num_returns=2 * SLOTS, timeout=30)
    shared = _run(short_task, 50, 0.005)
    a_done = sum(f.done() for f in a)
    for f in a:
        f.cancel()
    print(f"B standalone {standalone:.3f} s, beside A {shared:.3f} s, A done {a_done}")
    assert a_done < 2000 - 500, "A kept running and was far from done"
    # Without fair share B would wait for A's queue (~10 s). With it, B gets half the
    # executors within one task of A: about 2x its standalone time, plus slack for a
    # loaded machine.
    assert shared < 2 * standalone + 1.5, (standalone, shared)


def test_a_higher_priority_job_is_served_first() -> None:
    low = long_task.map([0.02] * 600)  # 3 s of work on 4 executors
    flame.wait(low, num_returns=2 * SLOTS, timeout=30)
    start = time.monotonic()
    pids = flame.get(urgent_task.map([0.02] * 40), timeout=60)
    took = time.monotonic() - start
    low_done = sum(f.done() for f in low)
    for f in low:
        f.cancel()
    # All executors go to the urgent job as their current task ends (none are killed):
    # 40 x 20 ms on 4 executors is 0.2 s; on a fair half it would take twice that.
    assert len(set(pids)) == SLOTS, pids
    assert low_done < 600 - 100, "the low-priority job was still running"
    assert took < 3.0, took


def test_max_executors_caps_concurrency() -> None:
    results = flame.get(capped_task.map([0.03] * 30), timeout=60)
    assert len({pid for pid, _, _ in results}) <= 2
    events = sorted([(s, 1) for _, s, _ in results] + [(e, -1) for _, _, e in results])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2, peak


def test_min_executors_are_held_from_open_even_idle() -> None:
    with Reserved() as obj:
        sid = obj._session_id
        deadline = time.monotonic() + 30
        while _executors(sid) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _executors(sid) == 2, "reserved before any call"
        info = api.runtime().conn._conn.get_session(sid)
        assert (info.min_executors, info.weight, info.slots) == (2, 1.0, 0)
        # Past the release delay (2 s by default) they are still held.
        time.sleep(2.5)
        assert _executors(sid) == 2
        assert obj.pid_of().result(timeout=30) > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_executors": 3, "max_executors": 2}, "min_executors (3) is more than"),
        ({"weight": 0}, "weight must be"),
        ({"weight": float("nan")}, "weight must be"),
        ({"slots": 2, "max_executors": 3}, "another name for max_executors"),
        ({"min_executors": -1}, "min_executors must be"),
        ({"priority": 1.5}, "priority must be"),
    ],
)
def test_bad_scheduling_options_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        flame.service(**options)(lambda: None)  # type: ignore[arg-type]
