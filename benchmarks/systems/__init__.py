"""The systems under test, one adapter each, all behind the same small interface.

Every adapter starts the same cluster: 2 worker processes with one thread each on this
machine, started by (and owned by) the process that measures. A workload only ever talks
to a :class:`System`, so the same workload code runs on each of them.

The module names end in ``_`` (``ray_``, ``dask_``) so that they cannot shadow the real
packages; ``systems.flame`` is only reachable through this package.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any, Callable, Protocol

__all__ = ["NAMES", "System", "load"]

# name on the command line → module in this package
NAMES = {"flame": "flame", "flame3": "flame_nodes", "ray": "ray_", "dask": "dask_"}
WORKERS = 2  # worker processes, one thread each, for every system


class System(Protocol):
    """What a workload may do with a system. Futures are the system's own objects."""

    name: str

    def import_system(self) -> None:
        """Import the system's package (timed separately by the ``startup`` workload)."""

    def start(self) -> None:
        """Start a local cluster of ``WORKERS`` single-threaded worker processes."""

    def stop(self) -> None:
        """Stop the cluster and every process it started."""

    def remote(self, fn: Callable[..., Any]) -> Any:
        """Make ``fn`` runnable on the workers; returns a handle for submit/map."""

    def submit(self, handle: Any, *args: Any) -> Any:
        """Run one task; returns a future."""

    def map(self, handle: Any, *iterables: Iterable[Any]) -> list[Any]:
        """One task per item, submitted the system's idiomatic batch way; futures."""

    def get(self, futures: list[Any]) -> list[Any]:
        """Wait for the futures; their results in order."""

    def get_one(self, future: Any) -> Any:
        """Wait for one future; its result."""

    def put(self, value: Any) -> Any:
        """Store ``value`` in the system's object store, or ``None`` if it has none."""


def load(name: str) -> System:
    """The adapter for ``name`` (``flame``, ``ray`` or ``dask``), not started yet."""
    module = importlib.import_module(f"systems.{NAMES[name]}")
    return module.Adapter()
