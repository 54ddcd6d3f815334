"""The workloads, one module each, in the order the runner runs them.

Each module has ``SIZES`` (``smoke`` / ``small`` / ``full`` → the parameters of one run)
and ``run(system, sizes, emit)``, which measures on a started :class:`systems.System` and
calls ``emit(metric, value, unit, **sizes)`` once per number. Two are special:

- ``startup`` sets ``SELF_STARTING``: it imports and starts the system itself, to time it.
- ``memory`` sets ``PARENT_SAMPLES_MEMORY``: the runner samples /proc from outside while
  the workload runs, so that sampling costs the measured processes nothing.

Task functions live at module level so that every system can import them by name
(the runner puts ``benchmarks/`` on ``PYTHONPATH`` for the workers too) and import nothing
at module level but the standard library: a workload module must stay cheap to import.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["NAMES", "load"]

NAMES = [
    "startup",
    "noop",
    "latency",
    "pi",
    "matrix",
    "large_arg",
    "broadcast",
    "shuffle",
    "transfer",
    "memory",
    "many_sessions",
    "fairness",
]


def load(name: str) -> ModuleType:
    """The workload module ``name``."""
    if name not in NAMES:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(NAMES)})")
    return importlib.import_module(f"workloads.{name}")
