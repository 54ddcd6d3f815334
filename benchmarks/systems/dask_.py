"""Dask: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` — the
scheduler inside the driver process, two nannies each running one worker process. No
dashboard.

Batches go through ``client.map``; every submit is ``pure=False`` (a new task each call,
no deduplication by argument hash); large values go through ``client.scatter``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Callable

from systems import WORKERS


class Adapter:
    name = "dask"

    def import_system(self) -> None:
        from dask.distributed import Client, LocalCluster

        self.Client = Client
        self.LocalCluster = LocalCluster

    def start(self) -> None:
        self.cluster = self.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = self.Client(self.cluster)

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def remote(self, fn: Callable[..., Any]) -> Any:
        return fn

    def submit(self, handle: Any, *args: Any) -> Any:
        return self.client.submit(handle, *args, pure=False)

    def map(self, handle: Any, *iterables: Iterable[Any]) -> list[Any]:
        return self.client.map(handle, *[list(it) for it in iterables], pure=False)

    def get(self, futures: list[Any]) -> list[Any]:
        return self.client.gather(futures)

    def get_one(self, future: Any) -> Any:
        return future.result()

    def put(self, value: Any) -> Any:
        return self.client.scatter(value)
