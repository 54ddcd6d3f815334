"""Future mechanics and the completion pump, against a scripted completion source."""

from __future__ import annotations

import asyncio
import concurrent.futures
import pickle
import queue
import threading
import time
from typing import Any

import pytest

import flame
from flame import _serde, errors
from flame.futures import CANCELLED, FAILED, SUCCEEDED, Completion, CompletionPump, Future


class Source:
    """Plays the part of ``_core.Connection``: completions are pushed by the test."""

    address = "127.0.0.1:1"

    def __init__(self) -> None:
        self.batches: queue.Queue[list[Completion] | None | BaseException] = queue.Queue()
        self.cancelled: list[tuple[int, int]] = []

    def next_completions(self, timeout: float) -> list[Completion] | None:
        try:
            item = self.batches.get(timeout=timeout)
        except queue.Empty:
            return []
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self, session_id: int, task_id: int) -> None:
        self.cancelled.append((session_id, task_id))

    def task_log(self, session_id: int, task_id: int) -> str:
        return f"log of {session_id}/{task_id}"


@pytest.fixture
def source() -> Any:
    src = Source()
    yield src
    src.batches.put(None)


def ok(task_id: int, value: object, session_id: int = 1) -> Completion:
    return (session_id, task_id, SUCCEEDED, _serde.dumps(value), None, 1, None)


def test_local_future_result_and_callback() -> None:
    fut = Future()
    seen: list[Any] = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    fut.set_result(5)
    assert fut.done() and fut.result() == 5 and seen == [5]
    fut.add_done_callback(lambda f: seen.append("late"))  # already done: called at once
    assert seen == [5, "late"]


def test_result_timeout() -> None:
    with pytest.raises(TimeoutError):
        Future().result(timeout=0.05)


def test_cancel_local_future_resolves_at_once() -> None:
    fut = Future()
    called = threading.Event()
    fut.add_done_callback(lambda f: called.set())
    assert fut.cancel()
    assert fut.cancelled() and fut.done() and called.is_set()
    with pytest.raises(flame.CancelledError):
        fut.result()
    # concurrent.futures.wait sees it as done (CANCELLED_AND_NOTIFIED).
    done, _ = concurrent.futures.wait([fut], timeout=0)
    assert done == {fut}


def test_cancel_finished_future_is_false() -> None:
    fut = Future()
    fut.set_result(1)
    assert not fut.cancel()


def test_await_in_asyncio() -> None:
    futs = [Future() for _ in range(3)]

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        for i, f in enumerate(futs):
            loop.call_later(0.01 * (3 - i), f.set_result, i)  # resolved "from elsewhere"
        first = await futs[0]
        rest = await asyncio.gather(futs[1], futs[2])
        return [first, *rest]

    assert asyncio.run(main()) == [0, 1, 2]


def test_await_from_another_thread_does_not_block_the_loop() -> None:
    fut = Future()

    async def main() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while not fut.done():
                ticks += 1
                await asyncio.sleep(0.005)

        threading.Timer(0.1, fut.set_result, args=(9,)).start()
        task = asyncio.ensure_future(ticker())
        value = await fut
        await task
        return value, ticks

    value, ticks = asyncio.run(main())
    assert value == 9 and ticks > 3


def test_await_raises_the_task_exception() -> None:
    fut = Future()
    fut.set_exception(KeyError("k"))

    async def main() -> None:
        await fut

    with pytest.raises(KeyError):
        asyncio.run(main())


def test_pump_resolves_and_decodes(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    raw, decoded = Future(), Future(_serde.loads)
    pump.register(1, [10, 11], [raw, decoded])
    assert (raw.session_id, raw.task_id) == (1, 10)
    source.batches.put([(1, 10, SUCCEEDED, b"raw", None, 1, None), ok(11, {"x": 1})])
    assert raw.result(5) == b"raw"
    assert decoded.result(5) == {"x": 1}
    assert decoded.attempts == 1
    assert pump.pending == 0


def test_completion_before_register_is_kept(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    source.batches.put([ok(5, "early")])
    deadline = time.monotonic() + 5
    while source.batches.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    fut = Future(_serde.loads)
    pump.register(1, [5], [fut])
    assert fut.result(5) == "early"


def test_failed_task_raises_mapped_error(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    lost, user = Future(), Future()
    pump.register(2, [1, 2], [lost, user])
    source.batches.put(
        [
            (2, 1, FAILED, b"", (errors.EXECUTOR_LOST, "executor 3 died", "", b""), 4, None),
            (
                2,
                2,
                FAILED,
                b"",
                (errors.USER_EXCEPTION, "ValueError: v", "TB", pickle.dumps(ValueError("v"))),
                1,
                None,
            ),
        ]
    )
    with pytest.raises(flame.ExecutorLostError, match="executor 3 died") as info:
        lost.result(5)
    assert (info.value.session_id, info.value.task_id) == (2, 1)
    assert lost.attempts == 4
    with pytest.raises(ValueError, match="v") as vinfo:
        user.result(5)
    assert str(vinfo.value.__cause__) == "TB"


def test_remote_cancel_waits_for_the_daemon(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    fut = Future()
    pump.register(3, [7], [fut])
    assert fut.cancel()
    assert source.cancelled == [(3, 7)]
    assert not fut.done()  # not until the daemon confirms
    source.batches.put([(3, 7, CANCELLED, b"", (errors.CANCELLED, "cancelled", "", b""), 0, None)])
    with pytest.raises(flame.CancelledError):
        fut.result(5)
    assert fut.cancelled()


def test_decode_failure_fails_the_future(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    fut = Future(_serde.loads)
    pump.register(1, [1], [fut])
    source.batches.put([(1, 1, SUCCEEDED, b"not a frame", None, 1, None)])
    with pytest.raises(flame.SerializationError):
        fut.result(5)


def test_callbacks_run_outside_the_registry_lock(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    first, second = Future(), Future()

    def chain(_: Future) -> None:  # registering from a callback must not deadlock
        pump.register(1, [2], [second])
        source.batches.put([(1, 2, SUCCEEDED, b"2", None, 1, None)])

    first.add_done_callback(chain)
    pump.register(1, [1], [first])
    source.batches.put([(1, 1, SUCCEEDED, b"1", None, 1, None)])
    assert second.result(5) == b"2"


def test_close_fails_pending_futures(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    fut = Future()
    pump.register(1, [1], [fut])
    source.batches.put(None)
    with pytest.raises(flame.ConnectionError, match="127.0.0.1:1"):
        fut.result(5)
    pump.join(5)
    late = Future()
    pump.register(1, [2], [late])
    with pytest.raises(flame.ConnectionError):
        late.result(0)


def test_broken_connection_fails_pending_futures(source: Source) -> None:
    pump = CompletionPump(source, poll=0.01)
    fut = Future()
    pump.register(1, [1], [fut])
    source.batches.put(flame.ConnectionError("stream reset by 127.0.0.1:1"))
    with pytest.raises(flame.ConnectionError, match="stream reset"):
        fut.result(5)


def test_a_tasks_log_is_echoed_with_its_id_before_the_future_resolves(
    source: Source, capsys: pytest.CaptureFixture[str]
) -> None:
    pump = CompletionPump(source, poll=0.01)
    fut, quiet = Future(), Future()
    pump.register(4, [9, 10], [fut, quiet])
    source.batches.put(
        [
            (4, 9, SUCCEEDED, b"1", None, 1, "hello\nworld\n"),
            (4, 10, SUCCEEDED, b"2", None, 1, None),
        ]
    )
    assert fut.result(5) == b"1" and quiet.result(5) == b"2"
    assert capsys.readouterr().err == "(task 4/9) hello\n(task 4/9) world\n"
    assert fut.log() == "log of 4/9"  # asked of the connection


def test_echo_can_be_turned_off(source: Source, capsys: pytest.CaptureFixture[str]) -> None:
    pump = CompletionPump(source, poll=0.01, echo_logs=False)
    fut = Future()
    pump.register(4, [9], [fut])
    source.batches.put([(4, 9, SUCCEEDED, b"1", None, 1, "hello\n")])
    assert fut.result(5) == b"1"
    assert capsys.readouterr().err == ""


def test_an_unsubmitted_future_has_no_log() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="never submitted"):
        Future().log()
