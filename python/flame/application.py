"""The service side of the low-level API: what a registered application implements.

A registered application is a :class:`FlameService` subclass. Each executor bound to a
session builds one instance, calls :meth:`~FlameService.on_session_enter` once, then
:meth:`~FlameService.on_task_invoke` for each task, and
:meth:`~FlameService.on_session_leave` when it leaves the session. Inputs and outputs are
raw bytes, so clients in any language can drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FlameService", "SessionContext", "TaskContext"]


@dataclass(frozen=True)
class SessionContext:
    """What an executor knows about the session it enters.

    Attributes:
        session_id: The session's id.
        application: The application name the session was created with.
        common_data: The bytes given to ``create_session`` (shared by all tasks).
    """

    session_id: int
    application: str
    common_data: bytes


@dataclass(frozen=True)
class TaskContext:
    """One task handed to :meth:`FlameService.on_task_invoke`.

    Attributes:
        session_id: The session the task belongs to.
        task_id: The task's id.
        input: The task's input bytes.
    """

    session_id: int
    task_id: int
    input: bytes


class FlameService:
    """Base class of services registered with ``Connection.register_application``.

    Subclasses must have a constructor callable without arguments; per-session setup goes
    in :meth:`on_session_enter`. An exception raised by any method is reported to the
    client: from ``on_session_enter`` it fails the session's tasks, from
    ``on_task_invoke`` it fails that task only.
    """

    def on_session_enter(self, ctx: SessionContext) -> None:
        """Called once per executor when it binds to a session (default: nothing)."""

    def on_task_invoke(self, ctx: TaskContext) -> bytes:
        """Run one task and return its output bytes."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement on_task_invoke")

    def on_session_leave(self) -> None:
        """Called once when the executor leaves the session (default: nothing)."""
