"""``broadcast``: one large array stored once and read by many tasks — issue #12's "200 MB
to 30 tasks". Each task sums a strided sample of the array (touching every page would time
memory bandwidth, not data movement). The time runs from the put to the last result.
A system without a put reports ``n/a`` (value ``null``)."""

from __future__ import annotations

import time
from typing import Any, Callable

SIZES = {
    "smoke": {"mb": 4, "tasks": 6},
    "small": {"mb": 50, "tasks": 30},
    "full": {"mb": 200, "tasks": 30},
}


def sample_sum(a: Any) -> float:
    return float(a[::512].sum())


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    import numpy as np

    mb, tasks = sizes["mb"], sizes["tasks"]
    arr = np.ones(mb * 1024 * 1024 // 8)
    expected = float(arr[::512].sum())
    fn = system.remote(sample_sum)
    # Warm-up, untimed: every worker imports numpy.
    assert system.get(system.map(fn, [np.ones(1024)] * 32)) == [2.0] * 32

    head_cpu = getattr(system, "head_cpu_seconds", None)  # flame3: the head's CPU, from /proc
    cpu0 = head_cpu() if head_cpu else 0.0
    t0 = time.perf_counter()
    ref = system.put(arr)
    if ref is None:
        emit("put_then_read", None, "s", mb=mb, tasks=tasks)
        return
    results = system.get(system.map(fn, [ref] * tasks))
    took = time.perf_counter() - t0
    emit("put_then_read", took, "s", mb=mb, tasks=tasks)
    if head_cpu:
        # Of one core, over the timed run.
        emit("head_cpu", 100 * (head_cpu() - cpu0) / took, "%", mb=mb, tasks=tasks)
    assert results == [expected] * tasks, results[:3]
