"""Scheduling options of a session — how many executors it may hold and how it competes for
them — validated once for both the decorator and the low-level ``create_session``.

The daemon checks them again (a client of any language may send anything); checking here
names the Python argument and fails before anything is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

from flame import errors

__all__ = ["Scheduling"]


def _count(name: str, value: object) -> int:
    # bool is an int subclass; True executors is a mistake worth naming.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.InvalidArgumentError(f"{name} must be an int >= 0, got {value!r}")
    if value > 0xFFFF_FFFF:
        raise errors.InvalidArgumentError(f"{name} must be below 2**32, got {value!r}")
    return value


class SessionKwargs(TypedDict):
    """The scheduling keyword arguments of ``_core.Connection.create_session``."""

    slots: int
    min_executors: int
    weight: float
    priority: int
    user: str


@dataclass(frozen=True)
class Scheduling:
    """A session's share of the cluster (see the README, "Scheduling").

    ``max_executors`` 0 means no limit; ``slots`` is its older name.
    """

    max_executors: int = 0
    min_executors: int = 0
    weight: float = 1.0
    priority: int = 0
    user: str = ""

    @classmethod
    def of(
        cls,
        *,
        slots: int | None = None,
        max_executors: int | None = None,
        min_executors: int | None = None,
        weight: float = 1.0,
        priority: int = 0,
        user: str | None = None,
    ) -> Scheduling:
        """Validate user-given options.

        Raises:
            flame.InvalidArgumentError (a ``ValueError``): an option is out of range, or
            ``slots`` and ``max_executors`` disagree, or ``min_executors > max_executors``.
        """
        slots = _count("slots", slots or 0)
        top = _count("max_executors", max_executors or 0)
        if slots and top and slots != top:
            raise errors.InvalidArgumentError(
                f"slots ({slots}) is another name for max_executors ({top}); give one of them"
            )
        top = top or slots
        low = _count("min_executors", min_executors or 0)
        if top and low > top:
            raise errors.InvalidArgumentError(
                f"min_executors ({low}) is more than max_executors ({top})"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise errors.InvalidArgumentError(f"weight must be a finite number > 0, got {weight!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise errors.InvalidArgumentError(f"priority must be an int, got {priority!r}")
        if not -(2**31) <= priority < 2**31:
            raise errors.InvalidArgumentError(f"priority must fit 32 bits, got {priority!r}")
        if user is not None and not isinstance(user, str):
            raise errors.InvalidArgumentError(f"user must be a str, got {user!r}")
        return cls(top, low, float(weight), priority, user or "")

    def session_kwargs(self) -> SessionKwargs:
        """Keyword arguments of ``_core.Connection.create_session``."""
        return {
            "slots": self.max_executors,
            "min_executors": self.min_executors,
            "weight": self.weight,
            "priority": self.priority,
            "user": self.user,
        }
