"""Objects: ``flame.put`` refs and large task arguments stored by reference in the embedded
cluster's node store, and deleted when nothing needs them any more. (A client on no node:
test_objects_multinode.py.)"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

import flame
from flame import api, objects


@flame.service
def total(a: np.ndarray) -> float:
    return float(a.sum())


@flame.service
def describe(value: object) -> tuple[str, bool]:
    writeable = bool(getattr(getattr(value, "flags", None), "writeable", True))
    return type(value).__name__, writeable


@flame.service
def nested(d: dict[str, list[np.ndarray]]) -> float:
    return float(sum(a.sum() for a in d["arrays"]))


def _object_files(directory: str) -> list[str]:
    # Object files only: a node's memory dir also holds its socket and `spill_dir`.
    return sorted(n for n in os.listdir(directory) if len(n) == 16 and not n.startswith("."))


def _until(check: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_put_passes_the_value_to_tasks_as_a_read_only_array() -> None:
    arr = np.arange(1_000_000, dtype=np.float64)
    ref = flame.put(arr)
    assert isinstance(ref, flame.ObjectRef) and ref.size >= arr.nbytes
    assert total(ref).result(timeout=60) == arr.sum()
    assert describe(ref).result(timeout=60) == ("ndarray", False)
    assert nested({"arrays": [ref, ref]}).result(timeout=60) == 2 * arr.sum()
    assert np.array_equal(flame.get(ref), arr) and np.array_equal(ref.get(), arr)


def test_the_same_ref_feeds_many_tasks() -> None:
    ref = flame.put(np.ones(300_000))
    assert flame.get(total.map([ref] * 50), timeout=60) == [300_000.0] * 50


def test_a_large_argument_travels_as_an_object_and_is_deleted_after() -> None:
    directory = api.runtime().conn.objects.node.dir
    arr = np.ones(objects.SPILL_BYTES // 8 * 3)
    fut = total(arr)
    assert fut.result(timeout=60) == arr.size
    assert _until(lambda: not _object_files(directory)), _object_files(directory)
    # A small argument is not stored at all.
    assert total(np.ones(10)).result(timeout=60) == 10
    assert not _object_files(directory)


def test_an_object_lives_while_its_ref_does() -> None:
    directory = api.runtime().conn.objects.node.dir
    ref = flame.put(np.ones(1000))
    name = f"{ref.id:016x}"
    fut = total(ref)
    del ref  # the pending task keeps it
    gc.collect()
    assert fut.result(timeout=60) == 1000
    assert _until(lambda: name not in _object_files(directory))


def test_a_missing_object_fails_the_task_naming_it() -> None:
    store = api.runtime().conn.objects
    ghost = objects.ObjectRef((api.runtime().conn.client_id << 32) | 0xFFFF_FF00, 10, store)
    with pytest.raises(flame.ObjectLostError, match="0x[0-9a-f]*ffffff00"):
        total(ghost).result(timeout=60)
    with pytest.raises(flame.ObjectLostError, match="no longer exists"):
        ghost.get()


def test_an_unpicklable_value_is_refused_at_put() -> None:
    import threading

    with pytest.raises(flame.SerializationError, match="lock"):
        flame.put(threading.Lock())
