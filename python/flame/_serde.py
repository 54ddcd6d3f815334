"""How Python objects cross the wire: pickle protocol 5 with out-of-band buffers.

A payload is one ``bytes`` frame::

    header      magic (1 byte) · 3 pad bytes · buffer count (u32) · pickle length (u64)
    lengths     one u64 per out-of-band buffer
    pickle      the pickle stream
    buffers     the raw buffers, each starting at a 64-byte aligned offset

Large contiguous buffers (numpy arrays, bytearrays, ...) are copied once, into the frame,
and come back as read-only zero-copy views of the received bytes.

The standard library's pickle is tried first because it is fast; cloudpickle is used when
it fails (lambdas, local classes) or when the stream refers to a module the executors
cannot import by name (``__main__`` or a module registered to be pickled by value).
"""

from __future__ import annotations

import os
import pickle
import reprlib
import struct
import sys
import sysconfig
import threading
import types
from typing import Any, Callable

import cloudpickle

from flame import _sources
from flame.errors import ObjectLostError, PayloadTooLargeError, SerializationError

__all__ = ["dumps", "dumps_function", "frame_parts", "loads", "register_by_value"]

PROTOCOL = 5
MAGIC = 0xF1  # also the frame's version: bump it when the layout changes
_HEADER = struct.Struct("<BxxxIQ")
_LENGTH = struct.Struct("<Q")
_ALIGN = 64

# Byte strings whose presence in a stdlib pickle means "this refers to a module that the
# executor may not be able to import": re-pickle with cloudpickle, by value.
_by_value_markers: list[bytes] = [b"__main__"]
_registry_lock = threading.Lock()

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


def describe(obj: object) -> str:
    """A short, safe description of an object for error messages."""
    if isinstance(obj, (bytes, bytearray)) and len(obj) > _repr.maxother:
        # reprlib has no rule for bytes: it would repr all of them (seconds for a GiB).
        return f"{type(obj).__qualname__} object of {len(obj)} bytes"
    try:
        text = _repr.repr(obj)
    except Exception:
        text = "<unrepresentable>"
    return f"{type(obj).__qualname__} object {text}"


def _pad(offset: int) -> int:
    return -offset % _ALIGN


def _pickle(obj: object, use_cloudpickle: bool) -> tuple[bytes, list[memoryview]]:
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        try:
            buffers.append(buf.raw())
        except BufferError:  # not contiguous: pickle it in-band instead
            return True
        return False

    if use_cloudpickle:
        data = cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=keep)
    else:
        data = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=keep)
    return data, buffers


def _needs_cloudpickle(data: bytes) -> bool:
    for marker in _by_value_markers:  # a loop: this runs for every task, twice
        if marker in data:
            return True
    return False


# The frame header of a payload without out-of-band buffers, up to its pickle length.
_NO_BUFFERS = _HEADER.pack(MAGIC, 0, 0)[: _HEADER.size - 8]
_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads


def frame_parts(obj: object, what: str | None = None) -> tuple[list[Any], int]:
    """The frame of ``obj`` as the pieces to write one after the other, and its size.

    Buffers are not copied: the pieces include zero-copy views of ``obj``'s buffers.

    Raises:
        SerializationError: ``obj`` cannot be pickled; names it and gives the reason.
    """
    try:
        data, buffers = _pickle(obj, use_cloudpickle=False)
        if _needs_cloudpickle(data):
            data, buffers = _pickle(obj, use_cloudpickle=True)
    except Exception:
        try:
            data, buffers = _pickle(obj, use_cloudpickle=True)
        except Exception as e:
            raise SerializationError(
                f"cannot serialize {what or describe(obj)}: {type(e).__name__}: {e}"
            ) from e
    return _assemble(data, buffers)


def _assemble(data: bytes, buffers: list[memoryview]) -> tuple[list[Any], int]:
    """The frame's pieces around a pickle stream and its out-of-band buffers, and its size."""
    header = _HEADER.pack(MAGIC, len(buffers), len(data))
    if not buffers:
        return [header, data], len(header) + len(data)
    parts: list[Any] = [header]
    parts.extend(_LENGTH.pack(buf.nbytes) for buf in buffers)
    parts.append(data)
    offset = _HEADER.size + _LENGTH.size * len(buffers) + len(data)
    for buf in buffers:
        pad = _pad(offset)
        parts.append(b"\0" * pad)
        parts.append(buf)
        offset += pad + buf.nbytes
    return parts, offset


Spill = Callable[[list[Any], int], bytes]


class _TooLarge(Exception):
    """Raised from inside the pickler once its output passes the limit: pickling stops
    there, before the rest of the object is serialized."""


class _LimitedSink:
    """The file a pickler writes to: keeps the pieces and counts them, and stops the
    pickler (raising :class:`_TooLarge`) as soon as they pass ``limit`` bytes. Out-of-band
    buffers are counted as the pickler hands them over."""

    __slots__ = ("buffers", "limit", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.buffers: list[memoryview] = []
        self.size = 0
        self.limit = 0

    def reset(self, limit: int) -> None:
        self.parts = []
        self.buffers = []
        self.size = 0
        self.limit = limit

    def write(self, data: Any) -> int:
        n = len(data) if type(data) is bytes else memoryview(data).nbytes
        self.size += n
        if self.size > self.limit:
            raise _TooLarge
        self.parts.append(data)
        return n

    def buffer(self, buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: pickled in-band instead (and counted there)
            return True
        # A buffer costs its bytes, its length field and at most one alignment pad.
        self.size += raw.nbytes + _LENGTH.size + _ALIGN
        if self.size > self.limit:
            raise _TooLarge
        self.buffers.append(raw)
        return False


# One stdlib pickler per thread, reused: making a Pickler per call would cost more than
# pickling a small result. It is dropped after any error (its state is then unknown).
_local = threading.local()


def _pickle_limited(
    obj: object, limit: int, use_cloudpickle: bool
) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``, stopping with :class:`_TooLarge` once the frame would pass ``limit``."""
    if use_cloudpickle:
        sink = _LimitedSink()
        sink.reset(limit)
        cloudpickle.Pickler(sink, protocol=PROTOCOL, buffer_callback=sink.buffer).dump(obj)
    else:
        pickler = getattr(_local, "pickler", None)
        if pickler is None:
            sink = _LimitedSink()
            pickler = pickle.Pickler(sink, PROTOCOL, buffer_callback=sink.buffer)
            _local.pickler, _local.sink = pickler, sink
        sink = _local.sink
        sink.reset(limit)
        try:
            pickler.clear_memo()
            pickler.dump(obj)
        except BaseException:
            _local.pickler = None
            raise
    parts = sink.parts
    data = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
    buffers = sink.buffers
    sink.reset(0)  # no reference to this object's pieces stays behind
    return data, buffers


def _too_large(obj: object, what: str | None, max_bytes: int, size: int | None = None) -> Exception:
    done = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return PayloadTooLargeError(
        f"{what or describe(obj)} serializes to {done}, over the limit of {max_bytes} bytes"
    )


# Values whose pickle is small for sure: pickled directly, without the counting pickler.
_SCALARS = frozenset({int, float, bool, complex, type(None)})
_SHORT = 1 << 12
# The largest pickle of a value `_surely_small` accepts (a str of _SHORT 4-byte characters).
_SMALL_MAX = 4 * _SHORT + 64


def _surely_small(obj: object) -> bool:
    """Whether ``obj``'s pickle is certainly far below any limit (a cheap check)."""
    # Exact types through `t` (cheaper than isinstance, and subclasses may pickle
    # differently) do not narrow `obj` for mypy: hence the ignores below.
    t = type(obj)
    if t in _SCALARS:
        return t is not int or obj.bit_length() <= 64 * 8  # type: ignore[attr-defined]
    if t is str or t is bytes:
        return len(obj) <= _SHORT  # type: ignore[arg-type]
    if t is tuple or t is list:
        return len(obj) <= 8 and all(type(x) in _SCALARS for x in obj)  # type: ignore[arg-type, attr-defined]
    return False


def _dumps_limited(obj: object, max_bytes: int, what: str | None) -> bytes:
    """:func:`dumps` with a limit, checked while pickling (never holds more than the limit)."""
    limit = max_bytes - _HEADER.size
    try:
        try:
            data, buffers = _pickle_limited(obj, limit, use_cloudpickle=False)
            if _needs_cloudpickle(data):
                data, buffers = _pickle_limited(obj, limit, use_cloudpickle=True)
        except _TooLarge:
            raise
        except Exception:
            data, buffers = _pickle_limited(obj, limit, use_cloudpickle=True)
    except _TooLarge:
        raise _too_large(obj, what, max_bytes) from None
    except Exception as e:
        raise SerializationError(
            f"cannot serialize {what or describe(obj)}: {type(e).__name__}: {e}"
        ) from e
    if not buffers:
        return _NO_BUFFERS + len(data).to_bytes(8, "little") + data
    parts, size = _assemble(data, buffers)
    if size > max_bytes:
        raise _too_large(obj, what, max_bytes, size)
    return b"".join(parts)


def dumps(
    obj: object,
    *,
    max_bytes: int | None = None,
    what: str | None = None,
    spill: Spill | None = None,
    spill_over: int = 1 << 20,
) -> bytes:
    """Serialize ``obj`` into one frame.

    Args:
        obj: Any picklable object; lambdas and local classes are handled by cloudpickle.
        max_bytes: If given, the largest frame allowed. It is checked while pickling: an
            object too large fails as soon as its output passes the limit, without
            serializing (or holding) the rest. Not combined with ``spill``.
        what: How to name ``obj`` in error messages (default: its type and repr).
        spill: If given, a frame over ``spill_over`` bytes is handed to it in pieces
            (see :func:`frame_parts`) and what it returns is used instead: the object
            store keeps the frame and returns a small reference frame.

    Raises:
        SerializationError: ``obj`` cannot be pickled; names it and gives the reason.
        PayloadTooLargeError: the frame is larger than ``max_bytes``.
    """
    if _surely_small(obj) and min(max_bytes or _SMALL_MAX, spill_over) >= _SMALL_MAX:
        # Most task arguments and results: no counting pickler, no buffers, no spill.
        small = _pickle_dumps(obj, PROTOCOL)
        return _NO_BUFFERS + len(small).to_bytes(8, "little") + small
    if max_bytes is not None and spill is None:
        return _dumps_limited(obj, max_bytes, what)
    # Fast path (most task arguments and results): stdlib pickle, no buffers, small.
    buffers: list[pickle.PickleBuffer] = []
    data: bytes | None
    try:
        data = _pickle_dumps(obj, PROTOCOL, buffer_callback=buffers.append)
    except Exception:
        data = None
    if (
        data is not None
        and not buffers
        and (max_bytes is None or len(data) + _HEADER.size <= max_bytes)
        and (spill is None or len(data) + _HEADER.size <= spill_over)
        and not _needs_cloudpickle(data)
    ):
        return _NO_BUFFERS + len(data).to_bytes(8, "little") + data
    parts, size = frame_parts(obj, what)
    if spill is not None and size > spill_over:
        return spill(parts, size)
    frame = parts[0] + parts[1] if len(parts) == 2 else b"".join(parts)
    if max_bytes is not None and len(frame) > max_bytes:
        raise _too_large(obj, what, max_bytes, len(frame))
    return frame


def loads(data: bytes | memoryview) -> Any:
    """Rebuild an object from a frame made by :func:`dumps`.

    Out-of-band buffers are zero-copy, read-only views of ``data``.

    Raises:
        SerializationError: ``data`` is not a frame, or unpickling failed (for example a
            module the object needs is missing here).
    """
    if data[:8] == _NO_BUFFERS:  # fast path: no out-of-band buffers
        try:
            return _pickle_loads(memoryview(data)[_HEADER.size :])
        except ObjectLostError:
            raise
        except Exception as e:
            raise SerializationError(
                f"cannot deserialize a payload of {len(data)} bytes: {type(e).__name__}: {e}"
            ) from e
    view = memoryview(data)
    if view.nbytes < _HEADER.size or view[0] != MAGIC:
        raise SerializationError(
            f"not a Flame payload ({view.nbytes} bytes, first byte "
            f"{view[0] if view.nbytes else None!r}, expected {MAGIC})"
        )
    _, count, length = _HEADER.unpack_from(view, 0)
    offset = _HEADER.size
    lengths = struct.unpack_from(f"<{count}Q", view, offset)
    offset += _LENGTH.size * count
    stream = view[offset : offset + length]
    offset += length
    buffers = []
    for n in lengths:
        offset += _pad(offset)
        buffers.append(view[offset : offset + n])
        offset += n
    if offset > view.nbytes:
        raise SerializationError(f"truncated Flame payload ({view.nbytes} of {offset} bytes)")
    try:
        return pickle.loads(stream, buffers=buffers)
    except ObjectLostError:
        raise  # a ref in the payload whose object is gone: say that, not "cannot unpickle"
    except Exception as e:
        raise SerializationError(
            f"cannot deserialize a payload of {view.nbytes} bytes: {type(e).__name__}: {e}"
        ) from e


# ---------------------------------------------------------------- functions and classes

_library_dirs = tuple(
    os.path.normcase(os.path.realpath(p)) + os.sep
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
)


def _is_library(module: types.ModuleType) -> bool:
    """Whether executors can import ``module`` by name: stdlib or installed packages."""
    name = module.__name__
    if name in sys.builtin_module_names or name.split(".")[0] in ("flame", "cloudpickle"):
        return True
    path = getattr(module, "__file__", None)
    if not path:
        return True  # builtin or namespace module: nothing to ship by value
    path = os.path.normcase(os.path.realpath(path))
    return path.startswith(_library_dirs) or f"{os.sep}site-packages{os.sep}" in path


def register_by_value(module_name: str) -> None:
    """Pickle objects from ``module_name`` by value from now on.

    Used for the module that defines a service: a script or a test module that executors
    could not import by name.
    """
    module = sys.modules.get(module_name)
    if module is None or module_name == "__main__" or _is_library(module):
        return
    with _registry_lock:
        marker = module_name.encode()
        if marker in _by_value_markers:
            return
        cloudpickle.register_pickle_by_value(module)
        _by_value_markers.append(marker)


def dumps_function(obj: object, *, what: str | None = None) -> bytes:
    """Serialize a service description with cloudpickle (functions and classes by value),
    keeping its code's file names and, for a spec dict, the source text of those files (see
    :mod:`flame._sources`).

    Raises:
        SerializationError: ``obj`` cannot be pickled; names it and gives the reason.
    """
    try:
        return _sources.dumps_with_sources(obj, PROTOCOL)
    except Exception as e:
        raise SerializationError(
            f"cannot serialize {what or describe(obj)}: {type(e).__name__}: {e}"
        ) from e
