"""Results by reference (#12): a task result larger than the head's ``result_object_mb``
(1 MiB by default) stays in the object store of the node that produced it; the head keeps
only a small frame that refers to it, the future loads it when asked (zero copy on the same
node), a future passed to another task passes its ref (the bytes never come through the
client), and the object goes when its future does. Runs on the embedded cluster, whose
head has a node (and an object store) of its own."""

from __future__ import annotations

import gc
import mmap
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

import flame
from flame import _core, _node_objects, api, futures
from flame.client import FlameService, SessionContext, TaskContext

MB = 1 << 20


@flame.service
def zeros(n: int) -> np.ndarray:
    return np.full(n, 7, dtype=np.uint8)


@flame.service
def total(a: np.ndarray) -> int:
    return int(a.sum(dtype=np.int64))


@flame.service
def small(n: int) -> int:
    return n + 1


@pytest.fixture
def node_dir() -> Iterator[str]:
    """The memory dir of the head's own node, which this client uses."""
    node = api.runtime().conn.objects.node
    if node is None:
        pytest.skip("this build's head runs no node object store (the store part of #12)")
    yield node.dir


def _file(directory: str, fut: flame.Future) -> str:
    assert fut.task_id is not None
    return os.path.join(directory, f"{_core.result_object_id(fut.task_id):016x}")


def _until(check: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _stored_output_bytes(fut: flame.Future) -> int:
    conn = api.runtime().conn._conn
    return int(conn.get_task(fut.session_id, fut.task_id)["output_bytes"])


def test_a_large_result_stays_on_its_node_and_loads_zero_copy(node_dir: str) -> None:
    fut = zeros(50 * MB)
    fut.exception(timeout=120)  # done, not loaded
    assert fut._ref is not None and fut._result is futures._BY_REF
    assert os.path.exists(_file(node_dir, fut))
    assert _stored_output_bytes(fut) < 1024  # the head holds the reference only
    arr = fut.result()
    assert arr.nbytes == 50 * MB and int(arr[::4096].sum()) == 7 * len(arr[::4096])
    # A view of the node's mapped file, read-only: no copy was made.
    assert not arr.flags.writeable
    base = arr.base
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
    assert fut.result() is arr  # loaded once


def test_a_small_result_travels_inline(node_dir: str) -> None:
    fut = small(1)
    assert fut.result(timeout=60) == 2
    assert fut._ref is None and not os.path.exists(_file(node_dir, fut))


def test_a_future_passed_on_moves_no_bytes_through_the_client(
    node_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []
    view = _node_objects.NodeObjects.view

    def spy(self: _node_objects.NodeObjects, object_id: int) -> memoryview:
        read.append(object_id)
        return view(self, object_id)

    monkeypatch.setattr(_node_objects.NodeObjects, "view", spy)
    first = zeros(20 * MB)
    second = total(first)  # submitted once `first` is done: with its ref, not its value
    assert second.result(timeout=120) == 7 * 20 * MB
    assert first._result is futures._BY_REF  # never loaded here
    assert first._ref.id not in read, "the client read the result it only passed on"
    # Passing the ref again (a done future) works the same.
    assert total(first).result(timeout=120) == 7 * 20 * MB
    assert first._ref.id not in read


def test_the_result_object_goes_with_its_future(node_dir: str) -> None:
    fut = zeros(2 * MB)
    fut.exception(timeout=60)
    path = _file(node_dir, fut)
    assert os.path.exists(path)
    del fut
    gc.collect()
    assert _until(lambda: not os.path.exists(path)), f"{path} is still there"


def test_a_damaged_result_is_reported_not_unpickled(node_dir: str) -> None:
    fut = zeros(2 * MB)
    fut.exception(timeout=60)
    path = _file(node_dir, fut)
    with open(path, "r+b") as f:  # truncated: the header's length no longer matches
        f.truncate(os.path.getsize(path) - 1)
    with pytest.raises(flame.ObjectLostError, match=f"{fut._ref.id:#x} is damaged"):
        fut.result()


# ---------------------------------------------------------------- common data


@flame.service
class Keeper:
    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def total(self) -> int:
        return int(self.data.sum(dtype=np.int64))


class CommonLength(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        self.common = context.common_data

    def on_task_invoke(self, context: TaskContext) -> bytes:
        return b"%d:%d" % (len(self.common), self.common.count(b"x"))


def test_large_constructor_arguments_are_stored_once_as_an_object() -> None:
    data = np.ones(3 * MB, dtype=np.uint8)
    with Keeper(data) as keeper:
        ref = keeper._args_ref
        assert ref is not None and ref.size > data.nbytes
        assert flame.get([keeper.total() for _ in range(4)], timeout=120) == [3 * MB] * 4
    # Small arguments stay in the spec.
    with Keeper(np.ones(10, dtype=np.uint8)) as keeper:
        assert keeper._args_ref is None and keeper.total().result(timeout=60) == 10


def test_large_common_data_is_stored_once_as_an_object() -> None:
    conn = api.runtime().conn
    conn.register_application("common-length", CommonLength)
    data = b"x" * (3 * MB)
    with conn.create_session("common-length", common_data=data, slots=2) as session:
        # The head holds a reference, not the bytes; every executor gets the bytes.
        assert len(conn._conn.get_session(session.id).common_data) < 100
        outputs = [f.result(timeout=120) for f in [session.run_task(b"") for _ in range(4)]]
        assert outputs == [b"%d:%d" % (len(data), len(data))] * 4
        assert session.id in conn._session_objects
    assert session.id not in conn._session_objects  # closed: the object may go
