"""The exceptions of Flame, and the one table that maps wire error kinds to them.

Every error Flame raises derives from :class:`FlameError`. A task that fails because the
user's code raised is re-raised as the user's own exception, with the remote traceback
attached as its ``__cause__`` (a :class:`RemoteTraceback`); only when that exception cannot
be rebuilt on the client is a :class:`TaskError` raised instead.

The native module ``flame._core`` raises :class:`ConnectionError`, :class:`SessionError`,
:class:`InvalidArgumentError`, :class:`PayloadTooLargeError`, :class:`ClusterStateLostError`
and :class:`FlameError` by importing them from here: keep those names.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import pickle
import sys

__all__ = [
    "AuthenticationError",
    "PermissionDeniedError",
    "CancelledError",
    "ClusterStateLostError",
    "ConnectionError",
    "ExecutorLostError",
    "FlameError",
    "FlameWarning",
    "InvalidArgumentError",
    "NotFoundError",
    "ObjectLostError",
    "PayloadTooLargeError",
    "RemoteTraceback",
    "SerializationError",
    "SessionEnterError",
    "SessionError",
    "StorageUnavailableError",
    "TaskError",
    "TaskTimeoutError",
    "error_from_tuple",
]

# Error kinds on the wire (`ErrorKind` in rust/core/proto/flame.proto).
USER_EXCEPTION = 1
EXECUTOR_LOST = 2
TIMEOUT = 3
CANCELLED = 4
SESSION_ENTER_FAILED = 5
SESSION_NOT_FOUND = 6
SESSION_CLOSED = 7
PAYLOAD_TOO_LARGE = 8
INVALID_ARGUMENT = 9
INTERNAL = 10
CLUSTER_STATE_LOST = 11
STORAGE_UNAVAILABLE = 12


class FlameError(Exception):
    """Base class of every error raised by Flame."""


class FlameWarning(UserWarning):
    """Warnings issued by Flame (the test suite turns them into errors)."""


class ConnectionError(FlameError, builtins.ConnectionError):  # shadows the builtin on purpose
    """The Flame daemon cannot be reached, or the connection to it was lost.

    The message names the daemon's address.
    """


class ClusterStateLostError(FlameError):
    """The daemon came back on another state than the one this client started on: its state
    dir was deleted or replaced, so this client's sessions, tasks and objects are gone.

    Every outstanding future fails with it, and so does every later call on the connection;
    the client never re-attaches to a session of the new state. Connect again (or call
    ``flame.shutdown()`` and ``flame.init()``) to start over.
    """


class AuthenticationError(FlameError):
    """The daemon did not accept this client's credentials: no token, or a token that is
    wrong, expired or revoked (the message says which), or a TLS certificate it does not
    trust. See README "Security" for where a client finds its token."""


class PermissionDeniedError(FlameError, PermissionError):
    """Authenticated, but not allowed: another user's session, task, log or object, or an
    admin-only call. The message names what was missing."""


class SessionError(FlameError):
    """The session is unknown to the daemon, or already closed."""


class InvalidArgumentError(FlameError, ValueError):
    """A request was malformed: a bad option value, an unknown application, ..."""


class NotFoundError(FlameError, LookupError):
    """The daemon knows no such task (or other object) by that id."""


class PayloadTooLargeError(FlameError):
    """A task's input or output is larger than the configured message limit."""


class StorageUnavailableError(FlameError):
    """The daemon cannot store its state (its disk is full, say) and refuses new sessions and
    tasks until it can; work it already accepted completes once storage recovers. The
    message names the state file and the cause."""


class ObjectLostError(FlameError):
    """An object a task or ``ObjectRef.get()`` needs no longer exists (its ref was dropped
    in the process that made it, or that process is gone), or its file cannot be trusted
    (another OS user owns it or can write it: it is never read). The message names the
    object, and the file and its owner when it was refused."""


class SerializationError(FlameError, TypeError):
    """An object cannot be serialized (or deserialized).

    Raised at call time, before anything is sent. The message names the offending object
    and the reason pickling failed.
    """


class TaskError(FlameError):
    """A task failed, and its original exception cannot be raised on this side.

    Attributes:
        session_id: The session the task belongs to (``None`` if unknown).
        task_id: The task's id (``None`` if unknown).
        remote_traceback: The traceback text captured on the executor, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: int | None = None,
        task_id: int | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.task_id = task_id
        self.remote_traceback = remote_traceback


class ExecutorLostError(TaskError):
    """The executor running the task died, and the retries are used up."""


class TaskTimeoutError(TaskError, TimeoutError):
    """The task ran longer than its session's timeout."""


class SessionEnterError(TaskError):
    """Entering the session failed on the executor (``on_session_enter`` or the service
    class's constructor raised), and the original exception cannot be restored."""


#: Raised by ``Future.result()`` for a cancelled task (the standard library's class).
CancelledError = concurrent.futures.CancelledError


if sys.version_info >= (3, 11):  # concurrent.futures.TimeoutError is TimeoutError there
    WaitTimeoutError = builtins.TimeoutError
else:

    class WaitTimeoutError(concurrent.futures.TimeoutError, builtins.TimeoutError):
        """A wait for a result timed out (caught by both ``except TimeoutError`` and
        ``except concurrent.futures.TimeoutError``)."""


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised on an executor.

    Attached as ``__cause__`` of a re-raised remote exception, so that Python prints the
    remote traceback above the local one (as ``concurrent.futures.process`` does).
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


# The one table from wire error kinds to exception classes.
ERROR_CLASSES: dict[int, type[BaseException]] = {
    USER_EXCEPTION: TaskError,
    EXECUTOR_LOST: ExecutorLostError,
    TIMEOUT: TaskTimeoutError,
    CANCELLED: CancelledError,
    SESSION_ENTER_FAILED: SessionEnterError,
    SESSION_NOT_FOUND: SessionError,
    SESSION_CLOSED: SessionError,
    PAYLOAD_TOO_LARGE: PayloadTooLargeError,
    INVALID_ARGUMENT: InvalidArgumentError,
    INTERNAL: FlameError,
    CLUSTER_STATE_LOST: ClusterStateLostError,
    STORAGE_UNAVAILABLE: StorageUnavailableError,
}


def _restore(payload: bytes) -> BaseException | None:
    """Unpickle the user's exception; ``None`` when it cannot be rebuilt here."""
    if not payload:
        return None
    try:
        exc = pickle.loads(payload)
    except Exception:  # a missing module or class, a broken __reduce__, ...
        return None
    return exc if isinstance(exc, BaseException) else None


def error_from_tuple(
    kind: int,
    message: str,
    traceback: str,
    payload: bytes,
    session_id: int | None = None,
    task_id: int | None = None,
) -> BaseException:
    """Build the exception to raise for a task error received from the daemon.

    A user exception (and a failed session enter that carries one) is unpickled and
    returned as itself, with a :class:`RemoteTraceback` as its ``__cause__``. When it
    cannot be unpickled, or for any other kind, the class comes from ``ERROR_CLASSES``;
    unknown kinds map to :class:`FlameError`.
    """
    if kind in (USER_EXCEPTION, SESSION_ENTER_FAILED):
        original = _restore(payload)
        if original is not None:
            if traceback:
                original.__cause__ = RemoteTraceback(traceback)
            return original
    cls = ERROR_CLASSES.get(kind, FlameError)
    exc: BaseException
    if issubclass(cls, TaskError):
        exc = cls(
            message,
            session_id=session_id,
            task_id=task_id,
            remote_traceback=traceback or None,
        )
    else:
        exc = cls(message)
    if traceback:
        exc.__cause__ = RemoteTraceback(traceback)
    return exc
