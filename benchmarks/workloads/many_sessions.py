"""``many_sessions``: many independent users at once — S different functions, each with a
batch of T tasks, all in flight together, from one driver.

Flame: S distinct ``@flame.service`` functions, i.e. S sessions, each shipping its own
function once and competing for the 2 executors. Ray: S distinct ``@ray.remote``
functions (each exported to the cluster once). Dask: S distinct functions through one
client. Separate driver processes ("jobs") were not used: with 100 of them on 2 cores the
measurement would be Python start-up, not the scheduler.
"""

from __future__ import annotations

import time
from typing import Any, Callable

SIZES = {
    "smoke": {"sessions": 4, "tasks": 10},
    "small": {"sessions": 20, "tasks": 100},
    "full": {"sessions": 100, "tasks": 100},
}


def session_function(k: int) -> Callable[[int], int]:
    """A distinct function per session (own name, own closure): ``x → x + k``."""

    def fn(x: int) -> int:
        return x + k

    fn.__name__ = fn.__qualname__ = f"session_{k}"
    return fn


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    s, t = sizes["sessions"], sizes["tasks"]
    t0 = time.perf_counter()
    batches = [system.map(system.remote(session_function(k)), range(t)) for k in range(s)]
    results = system.get([f for batch in batches for f in batch])
    elapsed = time.perf_counter() - t0
    expected = [x + k for k in range(s) for x in range(t)]
    assert results == expected, "wrong results"
    emit("seconds", elapsed, "s", sessions=s, tasks=t)
    emit("throughput", s * t / elapsed, "tasks/s", sessions=s, tasks=t)
