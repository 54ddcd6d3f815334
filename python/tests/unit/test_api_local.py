"""The parts of the user API that need no daemon: waiting on futures, decorator options,
local calls."""

from __future__ import annotations

import threading

import pytest

import flame
from flame import Future


def resolved(value: object) -> Future:
    fut = Future()
    fut.set_result(value)
    return fut


def later(value: object, delay: float) -> Future:
    fut = Future()
    threading.Timer(delay, fut.set_result, args=(value,)).start()
    return fut


def test_get_one_and_many() -> None:
    assert flame.get(resolved(1)) == 1
    assert flame.get([later("a", 0.05), resolved("b"), later("c", 0.01)], timeout=5) == [
        "a",
        "b",
        "c",
    ]
    with pytest.raises(TypeError, match="expected flame.Future"):
        flame.get([1, 2])  # type: ignore[list-item]


def test_get_raises_the_first_failure_in_order() -> None:
    bad = Future()
    bad.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        flame.get([resolved(1), bad])


def test_get_timeout() -> None:
    with pytest.raises(TimeoutError):
        flame.get([resolved(1), Future()], timeout=0.05)


def test_wait_num_returns_and_order() -> None:
    slow, fast, done = later(1, 0.3), later(2, 0.02), resolved(3)
    ready, not_ready = flame.wait([slow, fast, done], num_returns=2, timeout=5)
    assert ready == [fast, done] and not_ready == [slow]
    ready, not_ready = flame.wait([slow, fast, done], timeout=5)
    assert ready == [slow, fast, done] and not_ready == []


def test_wait_timeout_and_failures_count_as_done() -> None:
    failed = Future()
    failed.set_exception(ValueError("v"))
    pending = Future()
    ready, not_ready = flame.wait([pending, failed], timeout=0.05)
    assert ready == [failed] and not_ready == [pending]
    with pytest.raises(flame.InvalidArgumentError):
        flame.wait([pending], num_returns=2)


def test_as_completed() -> None:
    a, b = later("a", 0.1), resolved("b")
    assert [f.result() for f in flame.as_completed([a, b], timeout=5)] == ["b", "a"]
    with pytest.raises(TimeoutError):
        list(flame.as_completed([Future()], timeout=0.05))


def test_service_options_are_checked() -> None:
    for bad in ({"timeout": 0}, {"max_retries": -1}, {"slots": -2}, {"priority": "high"}):
        with pytest.raises(flame.InvalidArgumentError):
            flame.service(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="function or a class"):
        flame.service(42)


def test_retry_exceptions_is_checked_and_normalized() -> None:
    from flame.remote import Options

    assert Options().retry_exceptions is False
    assert Options(retry_exceptions=True).retry_exceptions is True
    assert Options(retry_exceptions=ValueError).retry_exceptions == (ValueError,)
    assert Options(retry_exceptions=(KeyError, OSError)).retry_exceptions == (KeyError, OSError)
    assert Options(retry_exceptions=()).retry_exceptions is False
    for bad in ("ValueError", 1, (ValueError, "x"), ValueError("x"), int):
        with pytest.raises(flame.InvalidArgumentError, match="retry_exceptions"):
            flame.service(retry_exceptions=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [{"max_payload": 0}, {"max_payload": 1.5}, {"client_lease": 0}, {"client_lease": "60"}],
)
def test_embedded_cluster_options_are_checked_before_starting(bad: dict[str, object]) -> None:
    from flame import api

    with pytest.raises(flame.InvalidArgumentError, match=next(iter(bad))):
        api._start_embedded(None, None, **bad)  # type: ignore[arg-type]


def test_decorating_needs_no_cluster() -> None:
    @flame.service(max_retries=1)
    def add(x: int, y: int) -> int:
        """Adds."""
        return x + y

    @flame.service
    class Box:
        def __init__(self, v: int) -> None:
            self.v = v

        def get(self) -> int:
            return self.v

        def _hidden(self) -> None:
            pass

    assert isinstance(add, flame.RemoteFunction) and isinstance(Box, flame.RemoteClass)
    assert add.local(1, 2) == 3
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    assert Box.local(5).get() == 5
    assert Box.methods == ["get"]
    with pytest.raises(TypeError, match="at least one iterable"):
        add.map()
