"""``noop``: throughput of tasks that do nothing — the per-task overhead. After a warm-up
batch, each batch is submitted the system's batch way and waited for in full."""

from __future__ import annotations

import time
from typing import Any, Callable

SIZES = {
    "smoke": {"warmup": 50, "tasks": [200]},
    "small": {"warmup": 1_000, "tasks": [2_000]},
    "full": {"warmup": 1_000, "tasks": [10_000, 100_000]},
}


def noop(x: int) -> int:
    return x


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    fn = system.remote(noop)
    warmup = sizes["warmup"]
    assert system.get(system.map(fn, range(warmup))) == list(range(warmup))
    for n in sizes["tasks"]:
        t0 = time.perf_counter()
        results = system.get(system.map(fn, range(n)))
        elapsed = time.perf_counter() - t0
        assert results == list(range(n)), "wrong results"
        emit("throughput", n / elapsed, "tasks/s", tasks=n, warmup=warmup)
