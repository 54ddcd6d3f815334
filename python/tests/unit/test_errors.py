"""The error hierarchy and the one table from wire error kinds to classes."""

from __future__ import annotations

import builtins
import concurrent.futures
import pickle

import pytest

import flame
from flame import errors


class CustomError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class NeedsTwoArgs(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")  # args no longer match __init__: unpickling fails


def test_hierarchy() -> None:
    assert issubclass(flame.ConnectionError, flame.FlameError)
    assert issubclass(flame.ConnectionError, builtins.ConnectionError)
    assert issubclass(flame.InvalidArgumentError, ValueError)
    assert issubclass(flame.SerializationError, TypeError)
    assert issubclass(flame.ExecutorLostError, flame.TaskError)
    assert issubclass(flame.TaskTimeoutError, TimeoutError)
    assert issubclass(flame.SessionEnterError, flame.TaskError)
    assert flame.CancelledError is concurrent.futures.CancelledError
    for cls in (flame.SessionError, flame.PayloadTooLargeError, flame.TaskError):
        assert issubclass(cls, flame.FlameError)


def test_table_covers_every_kind() -> None:
    assert sorted(errors.ERROR_CLASSES) == list(range(1, 13))


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        (errors.EXECUTOR_LOST, flame.ExecutorLostError),
        (errors.TIMEOUT, flame.TaskTimeoutError),
        (errors.CANCELLED, flame.CancelledError),
        (errors.SESSION_ENTER_FAILED, flame.SessionEnterError),
        (errors.SESSION_NOT_FOUND, flame.SessionError),
        (errors.SESSION_CLOSED, flame.SessionError),
        (errors.PAYLOAD_TOO_LARGE, flame.PayloadTooLargeError),
        (errors.INVALID_ARGUMENT, flame.InvalidArgumentError),
        (errors.INTERNAL, flame.FlameError),
        (errors.CLUSTER_STATE_LOST, flame.ClusterStateLostError),
        (errors.STORAGE_UNAVAILABLE, flame.StorageUnavailableError),
        (999, flame.FlameError),
    ],
)
def test_kinds_map_to_classes(kind: int, cls: type[BaseException]) -> None:
    exc = errors.error_from_tuple(kind, "what happened", "", b"", 1, 2)
    assert type(exc) is cls
    assert "what happened" in str(exc)


def test_user_exception_is_restored_with_remote_traceback() -> None:
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nCustomError: 7\n'
    exc = errors.error_from_tuple(
        errors.USER_EXCEPTION, "CustomError: 7", tb, pickle.dumps(CustomError(7)), 1, 2
    )
    assert isinstance(exc, CustomError) and exc.code == 7
    assert isinstance(exc.__cause__, flame.RemoteTraceback)
    assert str(exc.__cause__) == tb


def test_unrestorable_user_exception_becomes_task_error() -> None:
    payload = pickle.dumps(NeedsTwoArgs(1, 2))
    exc = errors.error_from_tuple(errors.USER_EXCEPTION, "NeedsTwoArgs: 1/2", "tb", payload, 3, 4)
    assert type(exc) is flame.TaskError
    assert str(exc) == "NeedsTwoArgs: 1/2"
    assert (exc.session_id, exc.task_id, exc.remote_traceback) == (3, 4, "tb")
    assert str(exc.__cause__) == "tb"


def test_garbage_payload_becomes_task_error() -> None:
    exc = errors.error_from_tuple(errors.USER_EXCEPTION, "boom", "", b"not a pickle")
    assert type(exc) is flame.TaskError


def test_session_enter_failure_restores_original_when_possible() -> None:
    exc = errors.error_from_tuple(
        errors.SESSION_ENTER_FAILED, "ValueError: bad", "tb", pickle.dumps(ValueError("bad"))
    )
    assert type(exc) is ValueError
    exc = errors.error_from_tuple(
        errors.SESSION_ENTER_FAILED, "cannot load the service: No module named 'x'", "tb", b""
    )
    assert type(exc) is flame.SessionEnterError
    assert "No module named 'x'" in str(exc)


def test_task_errors_pickle() -> None:
    exc = flame.TaskTimeoutError("slow", session_id=1, task_id=2, remote_traceback="tb")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is flame.TaskTimeoutError
    assert (str(back), back.session_id, back.task_id) == ("slow", 1, 2)
