"""``startup``: a fresh process until its first result — interpreter start, importing the
system, starting its cluster and one no-op task — timed from the parent's clock just
before it spawned the process. Also the parts, and how long shutdown takes."""

from __future__ import annotations

import time
from typing import Any, Callable

from workloads.noop import noop

SELF_STARTING = True
SIZES: dict[str, dict[str, Any]] = {"smoke": {}, "small": {}, "full": {}}


def run(
    system: Any, sizes: dict[str, Any], emit: Callable[..., None], *, t_spawn: float, t_main: float
) -> None:
    t_import = time.monotonic()
    system.import_system()
    t_start = time.monotonic()
    system.start()
    t_task = time.monotonic()
    try:
        assert system.get_one(system.submit(system.remote(noop), 1)) == 1
        t_first = time.monotonic()
    finally:
        system.stop()
    t_stopped = time.monotonic()

    ms = 1000.0
    emit("first_result", (t_first - t_spawn) * ms, "ms")
    emit("interpreter", (t_import - t_spawn) * ms, "ms")
    emit("import", (t_start - t_import) * ms, "ms")
    emit("cluster_start", (t_task - t_start) * ms, "ms")
    emit("first_task", (t_first - t_task) * ms, "ms")
    emit("shutdown", (t_stopped - t_first) * ms, "ms")
