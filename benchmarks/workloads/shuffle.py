"""``shuffle``: a map–reduce over random data, issue #12's "1 GB with 16 × 16 partitions".
Each mapper makes its share of the data and splits it into one partition per reducer;
each reducer receives every mapper's result (futures / refs passed as arguments, so the
system moves the data, not the driver) and sums its own partition of each. The time runs
from the first map to the last reduce; the reduced sums must add up to the data's sum."""

from __future__ import annotations

import time
from typing import Any, Callable

SIZES = {
    "smoke": {"mb": 8, "parts": 4},
    "small": {"mb": 256, "parts": 8},
    "full": {"mb": 1024, "parts": 16},
}


def mapper(seed: int, parts: int, count: int) -> tuple[float, list[Any]]:
    import numpy as np

    data = np.random.default_rng(seed).random(count)
    keys = (data * parts).astype(np.int64)
    return float(data.sum()), [data[keys == j] for j in range(parts)]


def reducer(j: int, *mapped: tuple[float, list[Any]]) -> float:
    return float(sum(m[1][j].sum() for m in mapped))


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    mb, parts = sizes["mb"], sizes["parts"]
    count = mb * 1024 * 1024 // 8 // parts
    map_fn, reduce_fn = system.remote(mapper), system.remote(reducer)
    # Warm-up, untimed: every worker imports numpy.
    system.get(system.map(map_fn, [1] * 8, [2] * 8, [16] * 8))

    t0 = time.perf_counter()
    mapped = [system.submit(map_fn, seed, parts, count) for seed in range(parts)]
    reduced = system.get([system.submit(reduce_fn, j, *mapped) for j in range(parts)])
    emit("map_reduce", time.perf_counter() - t0, "s", mb=mb, parts=parts)
    total = sum(system.get_one(m)[0] for m in mapped)
    assert abs(sum(reduced) - total) <= 1e-6 * total, (sum(reduced), total)
