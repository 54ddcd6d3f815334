"""The executor-side host (flame._worker.Worker) driven directly, without a daemon."""

from __future__ import annotations

import pickle
import sys
import threading
import types
from typing import Any

import cloudpickle
import pytest

from flame import _serde, errors
from flame._worker import Worker
from flame.application import FlameService, SessionContext, TaskContext


def spec(**kw: Any) -> bytes:
    return cloudpickle.dumps(kw)


def call(worker: Worker, *args: Any, **kwargs: Any) -> Any:
    out = worker.invoke(1, _serde.dumps((args, kwargs)))
    assert isinstance(out, bytes), out
    return _serde.loads(out)


class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def incr(self, by: int = 1) -> int:
        self.n += by
        return self.n


class BrokenInit:
    def __init__(self) -> None:
        raise ValueError("no config")


class NeedsTwoArgs(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


class Echo(FlameService):
    left: list[int] = []

    def on_session_enter(self, ctx: SessionContext) -> None:
        self.ctx = ctx

    def on_task_invoke(self, ctx: TaskContext) -> bytes:
        return self.ctx.common_data + ctx.input + str(ctx.task_id).encode()

    def on_session_leave(self) -> None:
        Echo.left.append(self.ctx.session_id)


def test_function_session() -> None:
    w = Worker()
    assert w.enter(7, "add", spec(kind="function", fn=lambda x, y=0: x + y), b"") is None
    assert call(w, 2, y=3) == 5
    w.leave()


def test_async_function() -> None:
    async def double(x: int) -> int:
        return 2 * x

    w = Worker()
    assert w.enter(7, "double", spec(kind="function", fn=double), b"") is None
    assert call(w, 21) == 42
    w.leave()


def test_user_exception() -> None:
    def boom(x: int) -> None:
        raise KeyError(x)

    w = Worker()
    assert w.enter(7, "boom", spec(kind="function", fn=boom), b"") is None
    out = w.invoke(1, _serde.dumps(((5,), {})))
    assert isinstance(out, tuple)
    kind, message, tb, payload, retryable = out
    assert kind == errors.USER_EXCEPTION
    assert retryable is False  # user exceptions are not retried by default
    assert message == "KeyError: 5"
    assert "in boom" in tb and "_worker.py" not in tb
    exc = pickle.loads(payload)
    assert type(exc) is KeyError and exc.args == (5,)


@pytest.mark.parametrize(
    ("retry", "raised", "retryable"),
    [
        (False, ValueError, False),
        (True, ValueError, True),
        ((ValueError,), ValueError, True),
        ((LookupError, OSError), KeyError, True),  # matched like `except`: subclasses too
        ((ValueError,), KeyError, False),
        (ValueError, ValueError, True),  # a bare class in a hand-made spec
    ],
)
def test_retryable_follows_retry_exceptions(
    retry: Any, raised: type[Exception], retryable: bool
) -> None:
    def boom() -> None:
        raise raised("again")

    w = Worker()
    assert w.enter(7, "boom", spec(kind="function", fn=boom, retry=retry), b"") is None
    out = w.invoke(1, _serde.dumps(((), {})))
    assert isinstance(out, tuple) and len(out) == 5
    assert out[0] == errors.USER_EXCEPTION and out[4] is retryable


def test_class_method_exception_is_retryable() -> None:
    w = Worker()
    cls_spec = spec(kind="class", cls=Counter, args=(0,), kwargs={}, retry=(TypeError,))
    assert w.enter(8, "Counter", cls_spec, b"") is None
    out = w.invoke(1, _serde.dumps(("incr", ("x",), {})))  # int + str: TypeError
    assert isinstance(out, tuple) and out[4] is True


def test_unserializable_result_is_never_retryable() -> None:
    w = Worker()
    w.enter(7, "lock", spec(kind="function", fn=threading.Lock, retry=True), b"")
    out = w.invoke(1, _serde.dumps(((), {})))
    assert isinstance(out, tuple) and out[0] == errors.USER_EXCEPTION and out[4] is False


def test_exception_that_cannot_round_trip_has_no_payload() -> None:
    def boom() -> None:
        raise NeedsTwoArgs(1, 2)

    w = Worker()
    w.enter(7, "boom", spec(kind="function", fn=boom), b"")
    out = w.invoke(1, _serde.dumps(((), {})))
    assert out == (errors.USER_EXCEPTION, "NeedsTwoArgs: 1/2", out[2], b"", False)


def test_unpicklable_result() -> None:
    w = Worker()
    w.enter(7, "lock", spec(kind="function", fn=threading.Lock), b"")
    out = w.invoke(1, _serde.dumps(((), {})))
    assert isinstance(out, tuple)
    assert out[0] == errors.USER_EXCEPTION
    assert out[1].startswith("SerializationError: cannot serialize the result of lock")
    assert "lock" in out[1]
    assert isinstance(pickle.loads(out[3]), errors.SerializationError)


def test_class_session_keeps_state() -> None:
    w = Worker()
    assert (
        w.enter(8, "Counter", spec(kind="class", cls=Counter, args=(10,), kwargs={}), b"") is None
    )
    assert _serde.loads(w.invoke(1, _serde.dumps(("incr", (), {})))) == 11
    assert _serde.loads(w.invoke(2, _serde.dumps(("incr", (), {"by": 5})))) == 16
    w.leave()


def test_class_constructor_failure() -> None:
    w = Worker()
    out = w.enter(8, "BrokenInit", spec(kind="class", cls=BrokenInit, args=(), kwargs={}), b"")
    assert out is not None
    kind, message, tb, payload = out
    assert kind == errors.SESSION_ENTER_FAILED
    assert message == "ValueError: no config"
    assert "__init__" in tb
    assert isinstance(pickle.loads(payload), ValueError)


def test_service_session() -> None:
    w = Worker()
    assert w.enter(9, "echo", spec(kind="service", cls=Echo), b"> ") is None
    assert w.invoke(3, b"hi") == b"> hi3"
    w.leave()
    assert Echo.left[-1] == 9


def test_service_must_return_bytes() -> None:
    class Bad(FlameService):
        def on_task_invoke(self, ctx: TaskContext) -> bytes:
            return 42  # type: ignore[return-value]

    w = Worker()
    w.enter(9, "bad", spec(kind="service", cls=Bad), b"")
    out = w.invoke(1, b"")
    assert isinstance(out, tuple) and out[0] == errors.USER_EXCEPTION
    assert "must return bytes, got int" in out[1]


def test_missing_module_is_named() -> None:
    module = types.ModuleType("flame_test_missing_module")

    def handler() -> None:
        pass

    handler.__module__ = module.__name__
    handler.__qualname__ = "handler"
    module.handler = handler  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        app_spec = pickle.dumps({"kind": "function", "fn": handler})
    finally:
        del sys.modules[module.__name__]
    out = Worker().enter(1, "app", app_spec, b"")
    assert out is not None
    assert out[0] == errors.SESSION_ENTER_FAILED
    assert out[1] == "cannot load the service: No module named 'flame_test_missing_module'"
    assert out[3] == b""


def test_garbage_spec_and_empty_spec() -> None:
    out = Worker().enter(1, "app", b"garbage", b"")
    assert out is not None and out[0] == errors.SESSION_ENTER_FAILED
    assert out[1].startswith("cannot load the service: ")
    out = Worker().enter(1, "app", b"", b"")
    assert out is not None and "has no service spec" in out[1]
    out = Worker().enter(1, "app", spec(kind="thing"), b"")
    assert out is not None and "unknown service kind 'thing'" in out[1]


def test_invoke_before_enter() -> None:
    out = Worker().invoke(1, b"")
    assert isinstance(out, tuple) and out[0] == errors.INTERNAL


def test_reenter_leaves_previous_session() -> None:
    w = Worker()
    w.enter(10, "echo", spec(kind="service", cls=Echo), b"")
    w.enter(11, "f", spec(kind="function", fn=lambda: 1), b"")
    assert Echo.left[-1] == 10
    assert call(w) == 1


@pytest.mark.parametrize("kind", ["function", "class", "service"])
def test_specs_survive_a_process_boundary_shape(kind: str) -> None:
    # The spec dicts written by the client side are what the worker reads.
    d = {
        "function": {"kind": "function", "fn": len},
        "class": {"kind": "class", "cls": Counter, "args": (0,), "kwargs": {}},
        "service": {"kind": "service", "cls": Echo},
    }[kind]
    assert Worker().enter(1, kind, _serde.dumps_function(d), b"") is None


def test_a_result_over_the_daemons_limit_fails_while_it_is_serialized() -> None:
    import time

    def huge(n: int) -> bytes:
        return b"x" * n

    w = Worker()
    assert w.enter(7, "huge", spec(kind="function", fn=huge), b"", 1 << 20) is None
    assert len(call(w, 1000)) == 1000
    started = time.monotonic()
    out = w.invoke(2, _serde.dumps(((64 << 20,), {})))
    assert isinstance(out, tuple), "a result over the limit must fail"
    kind, message, _, payload, retryable = out
    assert kind == errors.USER_EXCEPTION and not retryable
    assert isinstance(pickle.loads(payload), errors.PayloadTooLargeError)
    assert "the result of huge" in message and "1048576 bytes" in message
    assert time.monotonic() - started < 5
    w.leave()
