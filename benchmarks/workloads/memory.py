"""``memory``: peak memory of every process of the system — driver, daemon or scheduler,
executors or workers, raylet, GCS… — while it runs a batch of no-op tasks. The runner
samples /proc every ~50 ms from outside (the processes sharing the measured process's
session, and its descendants) over the process's whole life, start-up included: summed
RSS (what the brief asks; counts shared pages once per process), summed PSS (shared pages
split among their users) and the most processes seen at once."""

from __future__ import annotations

from typing import Any, Callable

from workloads.noop import noop

PARENT_SAMPLES_MEMORY = True
SIZES = {
    "smoke": {"tasks": 200},
    "small": {"tasks": 2_000},
    "full": {"tasks": 100_000},
}


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    fn = system.remote(noop)
    n = sizes["tasks"]
    assert system.get(system.map(fn, range(n))) == list(range(n))
