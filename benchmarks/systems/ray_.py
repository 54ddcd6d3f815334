"""Ray: ``ray.init(num_cpus=2)`` — GCS, raylet and two worker processes, tasks declared
``num_cpus=1``. No dashboard (``pip install ray`` has none), usage stats off.

Batches are a list of ``f.remote(...)`` calls (Ray has no batch submit); large values go
through ``ray.put``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Callable

from systems import WORKERS


class Adapter:
    name = "ray"

    def import_system(self) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here
        import ray

        self.ray = ray

    def start(self) -> None:
        self.ray.init(
            num_cpus=WORKERS,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=True,
            logging_level="warning",
        )

    def stop(self) -> None:
        self.ray.shutdown()

    def remote(self, fn: Callable[..., Any]) -> Any:
        return self.ray.remote(num_cpus=1)(fn)

    def submit(self, handle: Any, *args: Any) -> Any:
        return handle.remote(*args)

    def map(self, handle: Any, *iterables: Iterable[Any]) -> list[Any]:
        return [handle.remote(*args) for args in zip(*iterables)]

    def get(self, futures: list[Any]) -> list[Any]:
        return self.ray.get(futures)

    def get_one(self, future: Any) -> Any:
        return self.ray.get(future)

    def put(self, value: Any) -> Any:
        return self.ray.put(value)
