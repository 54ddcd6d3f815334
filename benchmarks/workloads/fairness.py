"""``fairness``: session A queues many long-ish tasks and holds every worker; session B
then submits a few short ones. How long B takes while A runs, against B alone, says
whether a newcomer waits behind a big backlog (FIFO) or gets its share at once.

Emits ``b_alone`` and ``b_with_a`` (seconds for all of B's tasks, submit to last result),
``b_slowdown`` (their ratio; 1 is perfectly fair) and ``a_total`` (A's own completion,
to show what fairness costs A). Both functions are warmed up first, so no worker start-up
is counted.
"""

from __future__ import annotations

import time
from typing import Any, Callable

SIZES = {
    "smoke": {"a_tasks": 40, "a_secs": 0.02, "b_tasks": 10, "b_secs": 0.002},
    "small": {"a_tasks": 2_000, "a_secs": 0.02, "b_tasks": 50, "b_secs": 0.005},
    "full": {"a_tasks": 2_000, "a_secs": 0.05, "b_tasks": 50, "b_secs": 0.005},
}


def long_task(i: int, secs: float) -> int:
    """One of A's tasks."""
    import time

    time.sleep(secs)
    return i


def short_task(i: int, secs: float) -> int:
    """One of B's tasks (a different function: a different session on Flame)."""
    import time

    time.sleep(secs)
    return i


def _run_b(system: Any, b: Any, sizes: dict[str, Any]) -> float:
    n = sizes["b_tasks"]
    t0 = time.perf_counter()
    got = system.get(system.map(b, range(n), [sizes["b_secs"]] * n))
    took = time.perf_counter() - t0
    assert list(got) == list(range(n)), "B's results in order"
    return took


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    a = system.remote(long_task)
    b = system.remote(short_task)
    # Warm both up: worker processes started, functions imported.
    system.get(system.map(a, range(4), [0.0] * 4))
    _run_b(system, b, sizes)
    alone = _run_b(system, b, sizes)

    n = sizes["a_tasks"]
    t_a = time.perf_counter()
    a_futures = system.map(a, range(n), [sizes["a_secs"]] * n)
    system.get_one(a_futures[0])  # A is running and holds the workers
    with_a = _run_b(system, b, sizes)
    assert list(system.get(a_futures)) == list(range(n)), "A's results in order"
    a_total = time.perf_counter() - t_a

    emit("b_alone", alone, "s", **sizes)
    emit("b_with_a", with_a, "s", **sizes)
    emit("b_slowdown", with_a / alone, "ratio", **sizes)
    emit("a_total", a_total, "s", **sizes)
