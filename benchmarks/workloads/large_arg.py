"""``large_arg``: one task that sums a large numpy array passed to it — the cost of moving
data into a task. ``arg`` passes the array itself; ``put`` stores it first (``flame.put``,
``ray.put``, ``client.scatter``) and passes the reference, put included in the time.
A system without a put reports ``n/a`` (value ``null``)."""

from __future__ import annotations

import time
from typing import Any, Callable

SIZES = {"smoke": {"mb": 1}, "small": {"mb": 20}, "full": {"mb": 100}}


def total(a: Any) -> float:
    return float(a.sum())


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    import numpy as np

    mb = sizes["mb"]
    arr = np.ones(mb * 1024 * 1024 // 8)
    fn = system.remote(total)
    # Warm-up, untimed: enough tasks that every worker imports numpy.
    assert system.get(system.map(fn, [np.ones(10)] * 64)) == [10.0] * 64

    t0 = time.perf_counter()
    assert system.get_one(system.submit(fn, arr)) == arr.size
    emit("arg", time.perf_counter() - t0, "s", mb=mb)

    t0 = time.perf_counter()
    ref = system.put(arr)
    if ref is None:
        emit("put", None, "s", mb=mb)
        return
    assert system.get_one(system.submit(fn, ref)) == arr.size
    emit("put", time.perf_counter() - t0, "s", mb=mb)
