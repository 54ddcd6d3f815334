"""Round trips of flame._serde: stdlib pickle, the cloudpickle fallback, out-of-band
buffers, and the errors for what cannot be serialized."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from flame import _serde
from flame.errors import PayloadTooLargeError, SerializationError


def test_plain_objects_round_trip() -> None:
    obj = {"a": [1, 2.5, "x", None], "b": (b"bytes", {3, 4}), "c": 10**30}
    assert _serde.loads(_serde.dumps(obj)) == obj


def test_frame_starts_with_magic() -> None:
    data = _serde.dumps(1)
    assert data[0] == _serde.MAGIC


def test_lambda_falls_back_to_cloudpickle() -> None:
    fn = _serde.loads(_serde.dumps(lambda x: x + 1))
    assert fn(1) == 2


def test_local_class_falls_back_to_cloudpickle() -> None:
    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

    assert _serde.loads(_serde.dumps(Local(7))).v == 7


def test_numpy_array_is_out_of_band_and_zero_copy() -> None:
    a = np.arange(100_000, dtype=np.float64)
    data = _serde.dumps({"a": a})
    # The array's bytes travel outside the pickle stream, so the frame is about their size.
    assert a.nbytes <= len(data) < a.nbytes + 1024
    b = _serde.loads(data)["a"]
    np.testing.assert_array_equal(a, b)
    # Zero copy: the rebuilt array points into the received frame.
    frame = np.frombuffer(data, dtype=np.uint8)
    start = frame.__array_interface__["data"][0]
    addr = b.__array_interface__["data"][0]
    assert start <= addr and addr + b.nbytes <= start + len(data)
    assert addr % 16 == 0  # buffers are aligned
    assert not b.flags.writeable


def test_several_buffers_and_non_contiguous_arrays() -> None:
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    obj = [a, a.T, a[:, 1], bytearray(b"xyz"), np.zeros(0)]
    out = _serde.loads(_serde.dumps(obj))
    for x, y in zip(obj[:3], out[:3]):
        np.testing.assert_array_equal(x, y)
    assert bytes(out[3]) == b"xyz"
    assert out[4].shape == (0,)


def test_unpicklable_object_names_it() -> None:
    with pytest.raises(SerializationError) as info:
        _serde.dumps({"lock": threading.Lock()})
    message = str(info.value)
    assert "dict object" in message and "lock" in message
    assert isinstance(info.value, TypeError)


def test_what_labels_the_object() -> None:
    with pytest.raises(SerializationError, match="argument 0 of f"):
        _serde.dumps(threading.Lock(), what="argument 0 of f()")


def test_max_bytes() -> None:
    with pytest.raises(PayloadTooLargeError, match="over the limit of 100 bytes"):
        _serde.dumps(b"x" * 1000, max_bytes=100)
    assert _serde.loads(_serde.dumps(b"x", max_bytes=100)) == b"x"


def test_loads_rejects_garbage() -> None:
    with pytest.raises(SerializationError, match="not a Flame payload"):
        _serde.loads(b"\x80\x05garbage-garbage")
    with pytest.raises(SerializationError, match="truncated"):
        _serde.loads(_serde.dumps(np.arange(1000))[:-10])


def test_dumps_function_pickles_by_value() -> None:
    def add(x: int, y: int) -> int:
        return x + y

    spec = pickle.loads(_serde.dumps_function({"kind": "function", "fn": add}))
    assert spec["fn"](2, 3) == 5


def test_dumps_function_names_the_culprit() -> None:
    lock = threading.Lock()

    def uses_lock() -> None:
        with lock:
            pass

    with pytest.raises(SerializationError, match="function uses_lock"):
        _serde.dumps_function(uses_lock, what="function uses_lock")


class Endless:
    """A list-like object whose pickle is as long as one likes: its items come from a
    generator, so pickling it never holds them all (only the pickle's output grows)."""

    def __init__(self, items: int) -> None:
        self.items = items

    def __reduce__(self) -> tuple:
        return (list, (), None, (f"item {i:08d}" for i in range(self.items)))


def test_max_bytes_stops_serializing_as_soon_as_the_limit_is_passed() -> None:
    import time
    import tracemalloc

    # ~17 bytes per item: 30 million items would pickle to ~500 MB.
    obj = Endless(30_000_000)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(PayloadTooLargeError, match="over the limit of 1048576 bytes"):
            _serde.dumps(obj, max_bytes=1 << 20, what="the result")
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak} bytes: the whole object was serialized"
    assert elapsed < 5, f"{elapsed:.1f} s: the limit was checked only after pickling"


def test_max_bytes_counts_out_of_band_buffers_as_they_come() -> None:
    arrays = [np.ones(1 << 18, dtype=np.uint8) for _ in range(8)]  # 8 x 256 KiB
    with pytest.raises(PayloadTooLargeError):
        _serde.dumps(arrays, max_bytes=1 << 20)
    frame = _serde.dumps(arrays, max_bytes=4 << 20)
    back = _serde.loads(frame)
    assert all((a == b).all() for a, b in zip(arrays, back))
    # Within the limit the frame is the same as without one.
    assert frame == _serde.dumps(arrays)
    obj = {"a": [1, 2.5, "x", None], "b": (b"bytes", {3, 4})}
    assert _serde.dumps(obj, max_bytes=1 << 20) == _serde.dumps(obj)
    assert _serde.loads(_serde.dumps(lambda x: x * 3, max_bytes=1 << 20))(2) == 6


def test_a_large_bytes_result_is_named_without_reprs_of_all_its_bytes() -> None:
    with pytest.raises(PayloadTooLargeError, match="bytes object of 67108864 bytes"):
        _serde.dumps(b"x" * (64 << 20), max_bytes=1 << 20)


def test_small_values_never_reach_the_spill() -> None:
    def spill(parts: list[object], size: int) -> bytes:
        raise AssertionError(f"a {size}-byte value was spilled")

    for value in (5, 2.5, None, "é" * 4096, b"x" * 4096, (1, 2.0, None)):
        frame = _serde.dumps(value, spill=spill, spill_over=1 << 20)
        assert _serde.loads(frame) == value


def test_a_spill_threshold_below_a_small_value_still_spills_it() -> None:
    spilled: list[int] = []

    def spill(parts: list[object], size: int) -> bytes:
        spilled.append(size)
        return _serde.dumps("ref")

    assert _serde.loads(_serde.dumps("x" * 4000, spill=spill, spill_over=100)) == "ref"
    assert spilled and spilled[0] > 4000
