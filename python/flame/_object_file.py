"""The object file format, as ``flame_core::objects::format`` defines it: a 64-byte header
(magic ``FLAMEOB1``, object id, data length, CRC-32 of those 24 bytes), then the object's
bytes exactly as serialized. Processes on a node write object files into the node's store
directory and map them from there; the header lets a reader refuse a truncated or damaged
file before a byte of it is unpickled.

Files are private: created 0600 by this process alone, and read only if this process's
user owns them and nobody else can write them.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import zlib
from typing import Any

__all__ = ["HEADER_BYTES", "DamagedObjectError", "header", "map_object", "write_object"]

HEADER_BYTES = 64
_MAGIC = b"FLAMEOB1"
_FIELDS = struct.Struct("<8sQQ")
# Buffers per pwritev call (the kernel's UIO_MAXIOV).
_IOV_MAX = 1024


class DamagedObjectError(Exception):
    """An object file that is not a whole object (truncated, damaged, or another's)."""


def header(object_id: int, length: int) -> bytes:
    """The header in front of an object of ``length`` data bytes."""
    fields = _FIELDS.pack(_MAGIC, object_id, length)
    crc = struct.pack("<I", zlib.crc32(fields))
    return fields + crc + bytes(HEADER_BYTES - len(fields) - len(crc))


def check(object_id: int, head: bytes | memoryview, file_len: int) -> int:
    """The data length of a header read from object ``object_id``'s file of ``file_len``
    bytes; raises :class:`DamagedObjectError` saying what is wrong."""

    def bad(why: str) -> DamagedObjectError:
        return DamagedObjectError(f"object {object_id:#x} is damaged: {why}")

    if len(head) < HEADER_BYTES:
        raise bad(f"its file has {len(head)} bytes, less than an object header ({HEADER_BYTES})")
    magic, found, length = _FIELDS.unpack_from(head)
    if magic != _MAGIC:
        raise bad("its file does not start with an object header")
    (crc,) = struct.unpack_from("<I", head, 24)
    if crc != zlib.crc32(bytes(head[:24])):
        raise bad("its header fails its checksum")
    if found != object_id:
        raise bad(f"its file holds object {found:#x}")
    if file_len != length + HEADER_BYTES:
        raise bad(
            f"its file has {file_len} bytes where the header says {length + HEADER_BYTES} "
            "(truncated or overwritten)"
        )
    return int(length)


def untrusted(path: str, st: os.stat_result) -> str | None:
    """Why a file must not be read (another user owns it, or others can write it), or None.
    The same words as the node's check (``flame_core::private_files``)."""
    euid = os.geteuid()
    if st.st_uid != euid:
        return (
            f"{path} belongs to uid {st.st_uid}, not to uid {euid} (this process); refusing "
            "to read a file another user could have written"
        )
    if st.st_mode & 0o022:
        mode = st.st_mode & 0o777
        return f"{path} can be written by other users (mode {mode:o}); refusing to read it"
    return None


def create_private(path: str) -> int:
    """A new file, 0600, for this process alone. One left at this name (by a process that
    died with this pid) is removed first, never truncated: its mode or its second name
    would survive a truncation."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        os.unlink(path)
        return os.open(path, flags, 0o600)


def object_path(directory: str, object_id: int) -> str:
    """Where object ``object_id`` lives in a store directory: ``directory/<id hex>``."""
    return os.path.join(directory, f"{object_id:016x}")


def write_object(directory: str, object_id: int, parts: list[Any]) -> int:
    """Write an object made of ``parts`` (buffers, in order) as ``directory/<id hex>``;
    returns its data length. Atomic: the file appears whole or not at all, and an id already
    stored is never replaced (``FileExistsError``)."""
    final = object_path(directory, object_id)
    tmp = os.path.join(directory, f".{object_id:016x}.{os.getpid()}.part")
    length = sum(memoryview(p).nbytes for p in parts)
    fd = create_private(tmp)
    try:
        try:
            _write_all(fd, [header(object_id, length), *parts])
        finally:
            os.close(fd)
        # A link, not a rename: an id already stored is never replaced.
        os.link(tmp, final)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return length


def _write_all(fd: int, parts: list[Any]) -> None:
    """Write ``parts`` one after the other at the start of the new file ``fd``.

    Written with ``pwritev``, not copied into a mapping: on tmpfs (/dev/shm) one write of a
    100 MB object took 0.05 s where the copy into a mapping took 0.16 s (a page fault per
    4 KiB page; benchmarks/RESULTS.md, 2026-12-02 "large_arg"), and a full tmpfs answers
    ENOSPC here instead of killing the process with SIGBUS on a page of the mapping.
    """
    views = [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]
    at = 0
    first = 0  # views[first:] are still to write
    while first < len(views):
        done = os.pwritev(fd, views[first : first + _IOV_MAX], at)
        if done <= 0:
            raise OSError(errno.EIO, f"pwritev wrote {done} bytes")
        at += done
        # A short write (over 2 GiB per call, or a signal): go on from where it stopped.
        while first < len(views) and done >= views[first].nbytes:
            done -= views[first].nbytes
            first += 1
        if done:
            views[first] = views[first][done:]


def map_object(directory: str, object_id: int) -> memoryview:
    """The data of object ``object_id`` in ``directory``, mapped read-only (zero copy).

    Raises:
        FileNotFoundError: the object is not there.
        PermissionError: the file is a symbolic link, another user's, or writable by others.
        DamagedObjectError: the file is not a whole object.
    """
    path = object_path(directory, object_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise PermissionError(f"{path} is a symbolic link; refusing to follow it") from None
    try:
        st = os.fstat(fd)  # the file opened, not whatever the name points to now
        problem = untrusted(path, st)
        if problem is not None:
            raise PermissionError(problem)
        head = os.pread(fd, HEADER_BYTES, 0)
        length = check(object_id, head, st.st_size)
        if length == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ))[HEADER_BYTES:]
    finally:
        os.close(fd)
