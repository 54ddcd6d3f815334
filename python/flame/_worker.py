"""The executor-side host: runs a session's service code for the native executor loop.

:class:`Worker` implements ``flame._core.ServiceHost``. The loop calls :meth:`Worker.enter`
when the executor binds to a session, :meth:`Worker.invoke` for each task and
:meth:`Worker.leave` when it unbinds. Nothing raised by user code escapes: failures come
back as error tuples ``(kind, message, traceback, payload)``, where ``payload`` is the
pickled exception (or ``b""`` when it cannot be pickled and rebuilt); a failed task's tuple
has a fifth element, ``retryable``, which asks the daemon to run the task again while it
has attempts left. A result that serializes to more than the session's
``result_object_bytes`` stays in this node's object store as the task's result object
(``ObjectId::result_of``): the task's output is then a small frame holding a
:class:`flame.objects.ResultMarker`, and :meth:`Worker.invoke` returns the triple
``(frame, object_id, size)`` so the loop can tell the head; a result holding refs comes as
``(frame, object_id or 0, size, ref_ids)``, so the head keeps those objects alive while the
result lives (its client deletes the result's object id when it drops it). A task that
printed something (see :mod:`flame._capture`) returns the pair ``(outcome, log_text)`` instead.

App specs are cloudpickled dicts:
  ``{"kind": "function", "fn": f, "retry": r}``      task input ``(args, kwargs)``
  ``{"kind": "class", "cls": C, "args": a, "kwargs": k, "retry": r}``
                                                    input ``(method, args, kwargs)``
  ``{"kind": "service", "cls": FlameServiceSubclass}``   raw bytes in, raw bytes out
where ``r`` (optional, default ``False``) says which exceptions of the user's code are
retryable: ``True`` for any, or a tuple of exception classes.
"""

from __future__ import annotations

import pickle
import sys
import threading
import traceback
from types import CoroutineType, TracebackType
from typing import Any, Callable, Optional, Union

import cloudpickle

from flame import _blocking, _serde, _sources, errors
from flame._capture import OutputCapture
from flame._node_objects import NodeObjects
from flame.application import FlameService, SessionContext, TaskContext
from flame.objects import resolve_common_data, take_noted

__all__ = ["Worker"]

ErrorTuple = tuple[int, str, str, bytes]
# (kind, message, traceback, payload, retryable)
TaskErrorTuple = tuple[int, str, str, bytes, bool]
EnterResult = Optional[ErrorTuple]
# A result stored in the node's object store: (marker frame, object id, size).
StoredResult = tuple[bytes, int, int]
# A result holding refs: (frame, stored object id or 0 if inline, size, ids of the refs).
RefsResult = tuple[bytes, int, int, list[int]]
Outcome = Union[bytes, StoredResult, RefsResult, TaskErrorTuple]
InvokeResult = Union[Outcome, tuple[Outcome, str]]
Retry = Union[bool, tuple[type[BaseException], ...]]

# How long the refs inside a result stay held here after it is returned: the result (on
# the executor stream) reaches the head well before their deletes (another connection).
_HOLD_RESULT_REFS_S = 2.0


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop the leading frames of this module, so the traceback starts in user code."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _format(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, _user_frames(e.__traceback__)))


def _pickle_exception(e: BaseException) -> bytes:
    """The pickled exception, or ``b""`` if it cannot make the round trip."""
    try:
        payload = cloudpickle.dumps(e, protocol=_serde.PROTOCOL)
        pickle.loads(payload)  # a class whose __init__ cannot take its args fails here
    except Exception:
        return b""
    return payload


def _failure(kind: int, e: BaseException, prefix: str = "") -> ErrorTuple:
    return (kind, f"{prefix}{type(e).__name__}: {e}", _format(e), _pickle_exception(e))


class Worker:
    """Hosts one session at a time inside an executor process."""

    def __init__(self, capture: OutputCapture | None = None) -> None:
        # Installed by the executor process; None (no capture) in tests that drive a Worker.
        self._capture = capture
        self._session_id: int | None = None
        self._name = ""
        self._result_what = ""  # how errors name a task's result (made once per session)
        self._max_output: int | None = None  # the daemon's limit on a result, in bytes
        # Results over this many bytes stay in the node's object store (None: inline).
        self._result_over: int | None = None
        self._node: NodeObjects | None | bool = False  # False: not looked up yet
        self._task_id = 0
        self._stored: tuple[int, int] | None = None  # (id, size) of the last stored result
        self._kind = ""
        self._target: Any = None
        self._retry: Retry = False
        self._loop: Any = None  # an asyncio loop, made for the first `async def` task

    # -------------------------------------------------------------- ServiceHost

    def enter(
        self,
        session_id: int,
        application: str,
        app_spec: bytes,
        common_data: bytes,
        max_output_bytes: int = 0,
        result_object_bytes: int = 0,
    ) -> EnterResult:
        """Load the session's service and set it up; an error tuple (kind 5) on failure.

        A task result larger than ``max_output_bytes`` (0: no limit) fails with
        :class:`flame.PayloadTooLargeError` as soon as serializing it passes the limit;
        one larger than ``result_object_bytes`` (0: never) stays in this node's object
        store instead, when this process runs on a node that has one.
        """
        if self._session_id is not None:
            self.leave()
        if not app_spec:
            return (
                errors.SESSION_ENTER_FAILED,
                f"cannot load the service: session {session_id} of application "
                f"'{application}' has no service spec",
                "",
                b"",
            )
        try:
            spec = pickle.loads(app_spec)
            kind = spec["kind"]
            _sources.install(spec.get(_sources.SOURCES_KEY))  # tracebacks show the source
        except Exception as e:
            reason = str(e) if isinstance(e, ImportError) else f"{type(e).__name__}: {e}"
            return (
                errors.SESSION_ENTER_FAILED,
                f"cannot load the service: {reason}",
                _format(e),
                b"",
            )
        try:
            if kind == "function":
                target = spec["fn"]
                if not callable(target):
                    raise TypeError(f"the service function is not callable: {target!r}")
            elif kind == "class":
                # Large constructor arguments come as an object, already resolved here.
                args, kwargs = spec.get("call") or (spec.get("args", ()), spec.get("kwargs", {}))
                target = spec["cls"](*args, **kwargs)
            elif kind == "service":
                target = spec["cls"]()
                if not isinstance(target, FlameService):
                    raise TypeError(f"{spec['cls']!r} is not a FlameService subclass")
                common = resolve_common_data(common_data)  # stored as an object if large
                target.on_session_enter(SessionContext(session_id, application, common))
            else:
                raise ValueError(f"unknown service kind {kind!r}")
        except Exception as e:
            return _failure(errors.SESSION_ENTER_FAILED, e)
        self._session_id = session_id
        self._max_output = max_output_bytes or None
        self._result_over = result_object_bytes or None
        self._name = application
        self._result_what = f"the result of {application}"
        self._kind = kind
        self._target = target
        retry = spec.get("retry", False) if kind != "service" else False
        self._retry = (retry,) if isinstance(retry, type) else retry
        return None

    def invoke(self, task_id: int, input: bytes) -> InvokeResult:
        """Run one task; its output bytes, or an error tuple (kind 1) if it failed.

        The tuple's ``retryable`` is true when the exception matches the session's
        ``retry_exceptions``; a result that cannot be serialized is never retryable. When
        the task printed something, the result comes paired with the text it printed.
        """
        capture = self._capture
        if capture is None:
            return self._invoke_scoped(task_id, input)
        capture.active = True
        try:
            result = self._invoke_scoped(task_id, input)
        finally:
            capture.active = False
        if capture.parts:
            return (result, capture.take())
        return result

    def _invoke_scoped(self, task_id: int, input: bytes) -> Outcome:
        """Run one task; the sessions it opened are closed before its result goes out."""
        _blocking.task_begin()
        try:
            return self._invoke(task_id, input)
        finally:
            opened = _blocking.task_end()
            if opened:
                from flame import api  # only then: plain tasks never load the client

                api.close_task_sessions(opened)

    def _invoke(self, task_id: int, input: bytes) -> Outcome:
        if self._session_id is None:
            msg = "a task arrived before any session was entered"
            return (errors.INTERNAL, msg, "", b"", False)
        try:
            result = self._call(task_id, input)
        except Exception as e:
            return (*_failure(errors.USER_EXCEPTION, e), self._retryable(e))
        if self._kind == "service":
            return self._service_output(result)
        take_noted()  # refs the task's own calls serialized: their tasks keep them
        try:
            over = self._result_over
            if over is not None and self._result_node() is not None:
                output = self._by_reference(task_id, result, over)
            else:
                output = _serde.dumps(result, what=self._result_what, max_bytes=self._max_output)
        except errors.FlameError as e:
            take_noted()
            return (*_failure(errors.USER_EXCEPTION, e), False)
        inner = take_noted()
        return output if not inner else self._with_refs(output, inner)

    def _with_refs(self, output: bytes | StoredResult, inner: list[Any]) -> RefsResult:
        """A result holding refs: ``(frame, object id or 0 if inline, size, ids)``. The head
        keeps those objects alive while the result lives; this process keeps its refs a
        little longer, so their deletes cannot reach the head before the result does."""
        hold = threading.Timer(_HOLD_RESULT_REFS_S, inner.clear)
        hold.daemon = True
        hold.start()
        ids = sorted({r.id for r in inner})
        if isinstance(output, tuple):
            return (*output, ids)
        return (output, 0, 0, ids)

    def _result_node(self) -> NodeObjects | None:
        node = self._node
        if node is False:
            node = self._node = NodeObjects.from_env()
        return node  # type: ignore[return-value]

    def _by_reference(self, task_id: int, result: object, over: int) -> bytes | StoredResult:
        """Serialize a result; one over the threshold goes into the node's store."""
        self._task_id, self._stored = task_id, None
        frame = _serde.dumps(
            result, what=self._result_what, spill=self._store_result, spill_over=over
        )
        stored, self._stored = self._stored, None
        return frame if stored is None else (frame, *stored)

    def _store_result(self, parts: list[Any], size: int) -> bytes:
        from flame import _core
        from flame.objects import ResultMarker

        node = self._result_node()
        assert node is not None
        object_id = _core.result_object_id(self._task_id)
        try:
            size = node.write(object_id, parts)
        except errors.InvalidArgumentError:
            # An earlier attempt of this task on this node stored it, then its executor
            # died before it could say so: the same task, the same result.
            node.seal(object_id, size)
        self._stored = (object_id, size)
        return _serde.dumps(ResultMarker(object_id, size))

    def leave(self) -> None:
        """Tear the session down (``on_session_leave`` for services); never raises."""
        target, kind = self._target, self._kind
        self._session_id, self._target, self._kind, self._retry = None, None, "", False
        if kind == "service":
            try:
                target.on_session_leave()
            except Exception:
                print(f"flame: on_session_leave of {self._name} failed:", file=sys.stderr)
                traceback.print_exc()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    # -------------------------------------------------------------- helpers

    def _call(self, task_id: int, input: bytes) -> Any:
        if self._kind == "service":
            assert self._session_id is not None
            return self._target.on_task_invoke(TaskContext(self._session_id, task_id, input))
        if self._kind == "function":
            args, kwargs = _serde.loads(input)
            fn: Callable[..., Any] = self._target
        else:
            method, args, kwargs = _serde.loads(input)
            fn = getattr(self._target, method)
        result = fn(*args, **kwargs)
        if isinstance(result, CoroutineType):  # `async def` services run to completion here
            if self._loop is None:
                import asyncio  # only then: executors start faster and smaller without it

                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(result)
        return result

    def _retryable(self, e: Exception) -> bool:
        retry = self._retry
        if isinstance(retry, tuple):
            return isinstance(e, retry)
        return retry is True

    def _service_output(self, result: object) -> Outcome:
        if result is None:
            return b""
        if isinstance(result, bytes):
            return result
        if isinstance(result, (bytearray, memoryview)):
            return bytes(result)
        e = TypeError(
            f"{self._name}: on_task_invoke must return bytes, got {type(result).__qualname__}"
        )
        return (errors.USER_EXCEPTION, f"TypeError: {e}", "", _pickle_exception(e), False)
