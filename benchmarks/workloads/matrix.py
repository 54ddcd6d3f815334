"""``matrix``: C = A·B with one task per cell (row i of A, column j of B → C[i][j]): many
tiny tasks that each carry two small numpy arrays. Checked against ``A @ B``."""

from __future__ import annotations

import time
from typing import Any, Callable

SIZES = {"smoke": {"n": 8}, "small": {"n": 32}, "full": {"n": 64}}


def cell(row: Any, col: Any) -> float:
    return float(row @ col)


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    import numpy as np

    n = sizes["n"]
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))
    rows = [a[i] for i in range(n) for _ in range(n)]
    cols = [np.ascontiguousarray(b[:, j]) for _ in range(n) for j in range(n)]
    fn = system.remote(cell)
    system.get(system.map(fn, rows, cols))  # warm-up, untimed: workers import numpy

    t0 = time.perf_counter()
    c = np.array(system.get(system.map(fn, rows, cols))).reshape(n, n)
    elapsed = time.perf_counter() - t0
    assert np.allclose(c, a @ b), "wrong product"
    emit("throughput", n * n / elapsed, "tasks/s", n=n, tasks=n * n)
    emit("seconds", elapsed, "s", n=n, tasks=n * n)
