"""Flame: the embedded cluster of ``flame.init(slots=2)`` — a session manager and an
executor manager inside the driver process, two executor processes.

Batches go through ``fn.map``; ``put`` is ``flame.put``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from systems import WORKERS


class Adapter:
    name = "flame"

    def import_system(self) -> None:
        import flame

        self.flame = flame

    def start(self) -> None:
        self.flame.init(slots=WORKERS)

    def stop(self) -> None:
        self.flame.shutdown()

    def remote(self, fn: Callable[..., Any]) -> Any:
        return self.flame.service(fn)

    def submit(self, handle: Any, *args: Any) -> Any:
        return handle(*args)

    def map(self, handle: Any, *iterables: Iterable[Any]) -> list[Any]:
        return handle.map(*iterables)

    def get(self, futures: list[Any]) -> list[Any]:
        return self.flame.get(futures)

    def get_one(self, future: Any) -> Any:
        return future.result()

    def put(self, value: Any) -> Any:
        return self.flame.put(value)
