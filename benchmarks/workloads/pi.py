"""``pi``: Monte Carlo π, each task drawing numpy samples — short CPU-bound tasks. The
speed-up is over the same tasks run one after another in the driver process (measured in
the same process, cluster idle); with 2 workers the ideal is 2×."""

from __future__ import annotations

import time
from typing import Any, Callable

from systems import WORKERS

SIZES = {
    "smoke": {"tasks": 4, "samples": 100_000},
    "small": {"tasks": 20, "samples": 1_000_000},
    "full": {"tasks": 100, "samples": 1_000_000},
}


def hits(seed: int, n: int) -> int:
    """How many of ``n`` random points of the unit square fall in the quarter circle."""
    import numpy as np

    xy = np.random.default_rng(seed).random((2, n))
    return int(np.count_nonzero((xy * xy).sum(axis=0) <= 1.0))


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    tasks, n = sizes["tasks"], sizes["samples"]
    fn = system.remote(hits)
    # Warm-up, untimed: numpy imported here and in every worker. Tasks of a few ms each,
    # so that every worker gets one (an instant batch may all go to the first worker).
    warm = max(n, 1_000_000)
    hits(0, 1_000)
    system.get(system.map(fn, range(4 * WORKERS), [warm] * (4 * WORKERS)))

    t0 = time.perf_counter()
    expected = sum(hits(seed, n) for seed in range(tasks))
    serial = time.perf_counter() - t0

    t0 = time.perf_counter()
    total = sum(system.get(system.map(fn, range(tasks), [n] * tasks)))
    parallel = time.perf_counter() - t0
    assert total == expected, f"{total} hits, expected {expected}"
    assert abs(4 * total / (tasks * n) - 3.14159) < 0.05

    emit("speedup", serial / parallel, "x", tasks=tasks, samples=n)
    emit("seconds", parallel, "s", tasks=tasks, samples=n)
    emit("serial_seconds", serial, "s", tasks=tasks, samples=n)
