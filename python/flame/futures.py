"""Futures for task results, and the pump that resolves them.

A :class:`Future` is a :class:`concurrent.futures.Future`, so the standard library's
``wait`` and ``as_completed`` work on it, and it can be awaited in any running asyncio loop.

Each connection has one :class:`CompletionPump`: a daemon thread that reads completion
batches from the native connection and resolves the matching futures. The registry of
unresolved futures is guarded by one lock; futures are resolved (and their callbacks run)
outside it, so a callback may submit more tasks. What a task printed arrives with its
completion; unless turned off, the pump echoes it to this process's stderr, each line
prefixed with the task, before it resolves the future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from flame import _blocking, errors
from flame.objects import ObjectStore, ResultMarker, collect_loaded, held_by, take_loaded

__all__ = ["CompletionPump", "Future"]

# States of concurrent.futures.Future (its module's constants).
_PENDING = concurrent.futures._base.PENDING
_FINISHED = concurrent.futures._base.FINISHED
_DONE_STATES = (
    concurrent.futures._base.CANCELLED,
    concurrent.futures._base.CANCELLED_AND_NOTIFIED,
    _FINISHED,
)
# The result of a future whose result is an object: loaded from its `_ref` when asked.
_BY_REF = object()
# Guards the creation of futures' conditions (see Future._condition).
_cond_lock = threading.Lock()

# Task states on the wire (`TaskState` in rust/core/proto/flame.proto).
PENDING = 1
RUNNING = 2
SUCCEEDED = 3
FAILED = 4
CANCELLED = 5

ErrorTuple = tuple[int, str, str, bytes]
# (session_id, task_id, state, output, error, attempts, log); log is None when empty
Completion = tuple[int, int, int, bytes, Optional[ErrorTuple], int, Optional[str]]
Decoder = Callable[[bytes], Any]


class CompletionSource(Protocol):
    """The part of ``flame._core.Connection`` the pump uses."""

    address: str

    def next_completions(self, timeout: float) -> list[Completion] | None: ...

    def cancel(self, session_id: int, task_id: int) -> None: ...

    def task_log(self, session_id: int, task_id: int) -> str: ...


class Future(concurrent.futures.Future):
    """The eventual result of a task.

    Besides the :class:`concurrent.futures.Future` API (``result``, ``exception``, ``done``,
    ``add_done_callback``, ...), a Flame future can be awaited inside any running asyncio
    loop, Jupyter's included, without blocking it.

    Attributes:
        session_id: The session the task was submitted to (``None`` until submitted).
        task_id: The task's id (``None`` until submitted).
        attempts: How many times the task was run, once it is finished.
    """

    # Slots, not a dict: a client may hold 100,000s of futures. The base class's `_condition`,
    # `_waiters` and `_done_callbacks` are made on first use (properties below).
    __slots__ = (
        "_callbacks",
        "_cond",
        "_decoder",
        "_exception",
        "_holder",
        "_keep",
        "_ref",
        "_result",
        "_source",
        "_state",
        "_waiter_list",
        "attempts",
        "session_id",
        "task_id",
    )

    def __init__(self, decoder: Decoder | None = None) -> None:
        # Not `super().__init__()`: the condition it makes (an RLock, a deque and half a
        # dozen attributes) costs more than the rest of a task's client-side bookkeeping, and
        # most futures are never waited on before they are done. It is made on first use
        # (see `_condition`); these are the other fields of concurrent.futures.Future.
        self._cond: threading.Condition | None = None
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiter_list: list[Any] | None = None
        self._callbacks: list[Callable[[Any], Any]] | None = None
        self.session_id: int | None = None
        self.task_id: int | None = None
        self.attempts = 0
        self._decoder = decoder
        # Objects the task reads (``flame.put`` refs, a spilled input): kept until it ends.
        self._keep: list[Any] | None = None
        # A result stored by reference (see flame.objects.ResultMarker): the ref this
        # future owns (the object is deleted when the future goes), loaded on `result()`.
        self._ref: Any = None
        # An inline result holding refs: the owned ref to its container (the result's
        # object id), whose delete lets the head release those refs (see _hold_refs).
        self._holder: Any = None
        self._source: CompletionSource | None = None

    def __repr__(self) -> str:
        with self._condition:
            state = self._state.lower()
        return f"<flame.Future session={self.session_id} task={self.task_id} state={state}>"

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """The condition of concurrent.futures.Future, made when something first needs it.

        Made under `_cond_lock`, which completion also takes while no condition exists: a
        waiter either sees the future done, or is there before the result and is notified.
        """
        cond = self._cond
        if cond is None:
            with _cond_lock:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        # Used by concurrent.futures.wait/as_completed, always under `_condition`.
        waiters = self._waiter_list
        if waiters is None:
            waiters = self._waiter_list = []
        return waiters

    @property
    def _done_callbacks(self) -> list[Callable[[Any], Any]]:
        # Appended to under `_condition` (add_done_callback); read once the future is done.
        callbacks = self._callbacks
        if callbacks is None:
            callbacks = self._callbacks = []
        return callbacks

    if TYPE_CHECKING:
        # Types only (no wrapper on the hot path): callbacks get this class, not the base.
        def add_done_callback(self, fn: Callable[[Future], object]) -> None: ...

    def _invoke_callbacks(self) -> None:
        if self._callbacks:
            # A private method typeshed does not declare: this class reuses
            # concurrent.futures internals (issue #16 removes that).
            super()._invoke_callbacks()  # type: ignore[misc]

    def _finish_unwatched(self, result: Any, exception: BaseException | None) -> bool:
        """Complete without a condition if nothing has looked at this future yet.

        Returns ``False`` when a condition exists (someone may wait): the caller then
        completes it the standard way.
        """
        with _cond_lock:
            if self._cond is not None:
                return False
            if self._state != _PENDING:
                return True  # already completed: a duplicate, ignored like below
            self._result = result
            self._exception = exception
            self._state = _FINISHED
        self._invoke_callbacks()  # nothing could register one without a condition
        return True

    def done(self) -> bool:
        """Whether the task finished or was cancelled (never blocks)."""
        return self._state in _DONE_STATES

    def __await__(self) -> Generator[Any, None, Any]:
        """Wait for the result in the running asyncio loop (thread-safe bridge)."""
        if self.done():
            return asyncio.wrap_future(self).__await__()
        return self._await_waiting()

    def _await_waiting(self) -> Generator[Any, None, Any]:
        # Inside an executor's task, the slot is free while the coroutine waits here.
        with _blocking.waiting():
            return (yield from asyncio.wrap_future(self).__await__())

    def result(self, timeout: float | None = None) -> Any:
        """The task's result, waiting up to ``timeout`` seconds (``None``: no limit).

        Raises:
            TimeoutError: the result was not ready in time.
            flame.CancelledError: the task was cancelled.
            Exception: the task's exception (a user exception as itself, with the
                remote traceback as its ``__cause__``).
        """
        if self._state == _FINISHED and self._exception is None:
            value = self._result  # done: no lock needed (fields are set before the state)
            return value if value is not _BY_REF else self._load()
        try:
            if self.done():
                value = super().result(timeout)
            else:
                with _blocking.waiting():  # inside an executor's task: the slot is free
                    value = super().result(timeout)
        except concurrent.futures.TimeoutError as e:
            if isinstance(e, TimeoutError):
                raise
            raise errors.WaitTimeoutError() from None
        return value if value is not _BY_REF else self._load()

    def _load(self) -> Any:
        """The value of a result stored by reference, read once (zero-copy on its node)."""
        collect_loaded()
        try:
            value = self._ref.get()
        finally:
            held_by(take_loaded(), self._ref)  # refs inside it keep the result object
        self._result = value  # later calls return it at once; the ref stays (for passing on)
        return value  # Python < 3.11

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception, or ``None`` if it succeeded (waits like :meth:`result`)."""
        try:
            with _blocking.waiting((self,)):
                return super().exception(timeout)
        except concurrent.futures.TimeoutError as e:
            if isinstance(e, TimeoutError):
                raise
            raise errors.WaitTimeoutError() from None

    def cancel(self) -> bool:
        """Cancel the task.

        A future not yet sent to the daemon is cancelled at once. For a task that is
        pending or running, the daemon is asked to cancel it and the future becomes
        cancelled when the daemon confirms; a task that finishes first keeps its result.

        Returns:
            ``True`` if the future was cancelled or cancellation was requested before the
            task finished; ``False`` if the task had already finished.
        """
        with self._condition:
            if self.done():
                return False
            source = self._source
            session_id, task_id = self.session_id, self.task_id
            if source is None or session_id is None or task_id is None:
                return self._resolve_cancelled()
        try:
            source.cancel(session_id, task_id)
        except errors.FlameError:
            # The connection is gone: the pump fails this future with ConnectionError.
            return False
        return True

    def log(self) -> str:
        """What the task printed (stdout and stderr), as the daemon stored it.

        Empty if the task printed nothing or has not finished yet. Only Python-level
        writes are captured, at most the last 1 Mi characters per task (a first line says
        how much was dropped); a retried task keeps the output of its last attempt.

        Raises:
            flame.InvalidArgumentError: the future was never submitted.
            flame.ConnectionError: the daemon cannot be reached.
        """
        source, session_id, task_id = self._source, self.session_id, self.task_id
        if source is None or session_id is None or task_id is None:
            raise errors.InvalidArgumentError(
                "this future was never submitted to Flame, so it has no task log"
            )
        return source.task_log(session_id, task_id)

    # -------------------------------------------------------------- used by Flame only

    def _bind(self, session_id: int, task_id: int, source: CompletionSource) -> None:
        # No lock: this runs before the future is registered, so nothing else can see it
        # as submitted yet (a hot path: one call per task).
        self.session_id = session_id
        self.task_id = task_id
        self._source = source

    def _resolve_cancelled(self) -> bool:
        self._keep = None
        if not super().cancel():
            return False
        # Moves CANCELLED to CANCELLED_AND_NOTIFIED so concurrent.futures.wait sees it.
        self.set_running_or_notify_cancel()
        return True

    def _set_result_safe(self, value: Any) -> None:
        if self._finish_unwatched(value, None):
            return
        try:
            self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled locally meanwhile

    def _hold_refs(self, loaded: list[Any]) -> None:
        """An inline result held refs: the head keeps their objects alive until this
        result's container (its object id, with no bytes) is deleted, which happens when
        this future and every ref read from the result are gone."""
        from flame import _core

        assert self.task_id is not None
        holder = ObjectStore.current().owned(_core.result_object_id(self.task_id), 0)
        held_by(loaded, holder)
        self._holder = holder

    def _set_exception_safe(self, exc: BaseException) -> None:
        self._keep = None
        if self._finish_unwatched(None, exc):
            return
        try:
            self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass

    def _complete(self, state: int, output: bytes, error: ErrorTuple | None, attempts: int) -> None:
        """Resolve from a completion record (runs on the pump thread, no lock held)."""
        self.attempts = attempts
        self._keep = None
        if state == SUCCEEDED:
            try:
                if self._decoder is not None:
                    collect_loaded()
                    try:
                        value = self._decoder(output)
                    finally:
                        loaded = take_loaded()
                else:
                    value, loaded = output, []
                if value.__class__ is ResultMarker:  # the result stayed on its node
                    self._ref = ObjectStore.current().owned(value.id, value.size)
                    value = _BY_REF
                elif loaded:
                    self._hold_refs(loaded)
            except BaseException as e:  # delivered to the waiter instead
                self._set_exception_safe(e)
                return
            self._set_result_safe(value)
        elif state == CANCELLED or (error is not None and error[0] == errors.CANCELLED):
            self._resolve_cancelled()
        elif error is not None:
            kind, message, tb, payload = error[:4]  # a newer daemon may add fields
            self._set_exception_safe(
                errors.error_from_tuple(kind, message, tb, payload, self.session_id, self.task_id)
            )
        else:
            self._set_exception_safe(
                errors.TaskError(
                    f"task {self.task_id} of session {self.session_id} ended in state "
                    f"{state} without an error record",
                    session_id=self.session_id,
                    task_id=self.task_id,
                )
            )


_MAX_EARLY = 100_000


class CompletionPump:
    """Resolves the futures of one connection from its completion stream.

    One daemon thread loops on ``next_completions``. When the connection closes or breaks,
    every unresolved future fails with :class:`flame.ConnectionError` — none is left hanging.
    With ``echo_logs``, what a task printed is written to ``sys.stderr`` as
    ``(task SESSION/TASK) line`` before its future resolves.
    """

    def __init__(self, conn: CompletionSource, poll: float = 0.2, echo_logs: bool = True) -> None:
        self._conn = conn
        self._poll = poll
        self._echo_logs = echo_logs
        self._lock = threading.Lock()
        self._futures: dict[tuple[int, int], Future] = {}
        # Completions that arrived before `register` saw their task ids (submit returns
        # the ids after the tasks are queued, so the race is real).
        self._early: dict[tuple[int, int], Completion] = {}
        self._closed = False
        self._close_reason: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"flame-completions[{conn.address}]", daemon=True
        )
        self._thread.start()

    @property
    def pending(self) -> int:
        """How many registered futures are unresolved."""
        with self._lock:
            return len(self._futures)

    def register(self, session_id: int, task_ids: list[int], futures: list[Future]) -> None:
        """Bind ``futures`` to submitted tasks and resolve them when they complete."""
        if len(task_ids) != len(futures):
            raise errors.FlameError(
                f"the daemon returned {len(task_ids)} task ids for {len(futures)} tasks"
            )
        ready: list[tuple[Future, Completion]] = []
        lost: list[Future] = []
        with self._lock:
            for task_id, fut in zip(task_ids, futures):
                fut._bind(session_id, task_id, self._conn)
                key = (session_id, task_id)
                if self._closed:
                    lost.append(fut)
                elif (early := self._early.pop(key, None)) is not None:
                    ready.append((fut, early))
                else:
                    self._futures[key] = fut
        for fut, c in ready:
            if c[6] and self._echo_logs:
                _echo(c[0], c[1], c[6])
            fut._complete(c[2], c[3], c[4], c[5])
        for fut in lost:
            fut._set_exception_safe(self._lost(fut))

    def join(self, timeout: float | None = None) -> None:
        """Wait for the pump thread to end (it ends when the connection closes)."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -------------------------------------------------------------- pump thread

    def _run(self) -> None:
        reason: BaseException | None = None
        try:
            while True:
                batch = self._conn.next_completions(self._poll)
                if batch is None:
                    break
                if batch:
                    self._dispatch(batch)
        except BaseException as e:  # the connection broke: fail the futures
            reason = e
        finally:
            self._fail_all(reason)

    def _dispatch(self, batch: list[Completion]) -> None:
        found: list[tuple[Future, Completion]] = []
        with self._lock:
            for c in batch:
                if c[2] in (PENDING, RUNNING):
                    continue  # progress report: the future stays registered
                key = (c[0], c[1])
                fut = self._futures.pop(key, None)
                if fut is not None:
                    found.append((fut, c))
                    continue
                if len(self._early) >= _MAX_EARLY:  # duplicates nobody will claim
                    del self._early[next(iter(self._early))]
                self._early[key] = c
        for fut, c in found:
            if c[6] and self._echo_logs:
                _echo(c[0], c[1], c[6])
            fut._complete(c[2], c[3], c[4], c[5])

    def _fail_all(self, reason: BaseException | None) -> None:
        with self._lock:
            self._closed = True
            self._close_reason = reason
            pending = list(self._futures.values())
            self._futures.clear()
            self._early.clear()
        for fut in pending:
            fut._set_exception_safe(self._lost(fut))

    def _lost(self, fut: Future) -> errors.ConnectionError:
        what = f"task {fut.task_id} of session {fut.session_id}"
        reason = self._close_reason
        if reason is None:
            return errors.ConnectionError(
                f"the connection to the Flame daemon at {self._conn.address} was closed "
                f"(or lost) before {what} finished"
            )
        return errors.ConnectionError(
            f"the connection to the Flame daemon at {self._conn.address} was lost before "
            f"{what} finished: {reason}"
        )


def _echo(session_id: int, task_id: int, log: str) -> None:
    """Write a task's output to this process's stderr, each line prefixed with the task
    (one write, so lines of concurrent echoes do not interleave)."""
    prefix = f"(task {session_id}/{task_id}) "
    text = "".join(f"{prefix}{line}\n" for line in log.splitlines())
    stream = sys.stderr
    if stream is None:  # pythonw, or a closed stream at exit
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass  # stderr closed or broken: the log stays retrievable with Future.log()
