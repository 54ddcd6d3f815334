"""``latency``: sequential submit-and-wait of a no-op task, one at a time: the round trip
a dependent chain of tasks pays per step. Percentiles in microseconds."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from workloads.noop import noop

SIZES = {
    "smoke": {"warmup": 10, "calls": 20},
    "small": {"warmup": 50, "calls": 300},
    "full": {"warmup": 100, "calls": 1_000},
}


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    fn = system.remote(noop)
    for i in range(sizes["warmup"]):
        system.get_one(system.submit(fn, i))
    n = sizes["calls"]
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        assert system.get_one(system.submit(fn, i)) == i
        lat.append((time.perf_counter() - t0) * 1e6)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    for p in (50, 90, 99):
        emit(f"p{p}", q[p - 1], "µs", calls=n)
