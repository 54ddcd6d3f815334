"""Objects: values stored once in the cluster and passed to tasks by reference.

``flame.put(value)`` serializes ``value`` once into the head's object store and returns an
:class:`ObjectRef`. A task that receives a ref as an argument (anywhere in its arguments)
gets the value; numpy arrays and other buffers come back as zero-copy, **read-only** views
of the stored bytes. Task arguments that serialize to more than :data:`SPILL_BYTES` are
stored the same way automatically, so a large array never travels through the task queue,
the database or the scheduler.

Where the bytes go: the head keeps each object as a file in its object directory. A
process on the head's machine (the client of an embedded cluster, its executors) writes
the file itself and maps it into memory to read it — one copy in all, as with a
shared-memory store. A process elsewhere uploads and downloads it over gRPC in chunks. It
tells which it is by finding the head's token in ``<object dir>/token``; setting
``FLAME_OBJECTS_VIA_RPC=1`` forces the gRPC path.

Files are private: written 0600 in the head's 0700 object directory, and a file (token or
object) is trusted only if this process's user owns it and nobody else can write it. An
object file that fails the check is never mapped (its pickle could run anyone's code):
reading it raises :class:`flame.ObjectLostError` naming the file and its owner; a token
file that fails it sends this process over gRPC, with a warning.

Lifetime: an object lives while its :class:`ObjectRef` (in the process that made it) is
referenced, or a task that uses it is unfinished; after that it is deleted. Objects of a
client that goes away are deleted by the head when the client's lease runs out.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from typing import Any, Callable

from flame import _serde, errors

__all__ = ["SPILL_BYTES", "ObjectRef", "ObjectStore"]

SPILL_BYTES = 1 << 20
"""Task arguments serializing to more than this many bytes are stored as an object."""

# Set in executor processes: refs in task arguments are replaced by their values there.
RESOLVE_REFS = False

_noted = threading.local()


def take_noted() -> list[ObjectRef] | None:
    """The refs serialized on this thread since the last call (their tasks keep them)."""
    return _noted.__dict__.pop("refs", None)


class ObjectRef:
    """A reference to a value stored in the cluster by :func:`flame.put`.

    Pass it to tasks in place of the value; ``ref.get()`` (or ``flame.get(ref)``) reads the
    value here.

    Attributes:
        id: The object's id.
        size: Its serialized size in bytes.
    """

    __slots__ = ("__weakref__", "_store", "id", "size")

    def __init__(self, object_id: int, size: int, store: ObjectStore) -> None:
        self.id = object_id
        self.size = size
        self._store = store

    def __repr__(self) -> str:
        return f"<flame.ObjectRef {self.id:#x} ({self.size} bytes)>"

    def __reduce__(self) -> tuple[Any, ...]:
        # The task that carries this ref keeps it (and so the object) alive until it ends.
        _noted.__dict__.setdefault("refs", []).append(self)
        return (_rebuild, (self.id, self.size, self._store.dir, self._store.token))

    def get(self) -> Any:
        """Read the value (zero-copy for buffers when on the head's machine)."""
        return self._store.load(self.id)


def _rebuild(object_id: int, size: int, directory: str, token: str) -> Any:
    store = ObjectStore.for_location(directory, token)
    if RESOLVE_REFS:
        return store.load(object_id)
    return ObjectRef(object_id, size, store)


def _untrusted(path: str, st: os.stat_result) -> str | None:
    """Why a file must not be read (another user owns it, or others can write it), or None.
    The same words as the head's check (``flame_core::private_files``)."""
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


def _same_machine(directory: str, token: str) -> bool:
    if os.environ.get("FLAME_OBJECTS_VIA_RPC") == "1" or not directory or not token:
        return False
    path = os.path.join(directory, "token")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # another machine, or a directory this user cannot read
    try:
        problem = _untrusted(path, os.fstat(fd))
        if problem is not None:
            warnings.warn(
                f"not using the object files in {directory} directly: {problem}; objects "
                "go through the head over gRPC",
                errors.FlameWarning,
                stacklevel=3,
            )
            return False
        return os.read(fd, 4096).decode("ascii", "replace").strip() == token
    except OSError:
        return False
    finally:
        os.close(fd)


class ObjectStore:
    """One head's object store as seen from this process: files or gRPC.

    Args:
        directory, token: what the head announced (``Connection.object_dir``).
        rpc: a ``flame._core.ObjectClient``, or a callable making one on first use.
        next_id: makes fresh object ids (only in a process that puts objects).
    """

    _by_location: dict[tuple[str, str], ObjectStore] = {}
    _registry_lock = threading.Lock()

    def __init__(
        self,
        directory: str,
        token: str,
        rpc: Callable[[], Any],
        next_id: Callable[[], int] | None = None,
    ) -> None:
        self.dir = directory
        self.token = token
        self.local = _same_machine(directory, token)
        self._make_rpc = rpc
        self._rpc: Any = None
        self._next_id = next_id
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()  # id -> fetched bytes
        self._cached_bytes = 0
        self._doomed: list[int] = []  # owned objects to delete over gRPC
        with ObjectStore._registry_lock:
            ObjectStore._by_location[(directory, token)] = self

    @classmethod
    def for_location(cls, directory: str, token: str) -> ObjectStore:
        """The store a ref points to; in an executor, reached at ``FLAME_ADDRESS``."""
        with cls._registry_lock:
            store = cls._by_location.get((directory, token))
        if store is not None:
            return store

        def connect() -> Any:
            from flame import _core, _credentials

            address = os.environ.get("FLAME_ADDRESS")
            if not address:
                raise errors.ObjectLostError(
                    f"cannot fetch objects from the head at {directory}: this process is "
                    "not on the head's machine and FLAME_ADDRESS is not set"
                )
            found = _credentials.lookup(address)
            return _core.ObjectClient(address, token=found.token, ca_pem=found.ca_pem)

        return cls(directory, token, connect)

    # -------------------------------------------------------------- writing

    def put(self, value: Any) -> ObjectRef:
        """Serialize ``value`` into a new object owned by this process."""
        parts, size = _serde.frame_parts(value)
        return self.store_parts(parts, size)

    def store_parts(self, parts: list[Any], size: int) -> ObjectRef:
        """Store a serialized frame (its parts, in order) as a new object."""
        if self._next_id is None:
            raise errors.FlameError("this process cannot create objects (no connection)")
        object_id = self._next_id()
        if self.local:
            self._write_file(object_id, parts)
        else:
            self._flush_deletes()
            self._client().put(object_id, [bytes(p) for p in parts])
        ref = ObjectRef(object_id, size, self)
        weakref.finalize(ref, self._delete, object_id)
        return ref

    def spill(self, parts: list[Any], size: int) -> bytes:
        """Store a task input as an object; the small frame to send in its place."""
        return _serde.dumps(self.store_parts(parts, size))

    def _write_file(self, object_id: int, parts: list[Any]) -> None:
        final = os.path.join(self.dir, f"{object_id:016x}")
        tmp = os.path.join(self.dir, f".{object_id:016x}.{os.getpid()}.part")
        try:
            fd = _create_private(tmp)
            try:
                size = sum(memoryview(p).nbytes for p in parts)
                os.ftruncate(fd, size)
                if size:
                    # Copied into a mapping rather than written: on a fresh file write() was
                    # several times slower (page cache allocation on the write path).
                    with mmap.mmap(fd, size) as m:
                        at = 0
                        for p in parts:
                            view = memoryview(p).cast("B")
                            m[at : at + view.nbytes] = view
                            at += view.nbytes
            finally:
                os.close(fd)
            # A link, not a rename: an id already stored is never replaced (as on the head).
            try:
                os.link(tmp, final)
            finally:
                os.unlink(tmp)
        except FileExistsError as e:
            raise errors.InvalidArgumentError(
                f"object {object_id:#x} is already stored; an object is written once and never "
                "replaced"
            ) from e
        except OSError as e:
            raise errors.FlameError(f"cannot store object {object_id:#x} in {self.dir}: {e}") from e

    def _delete(self, object_id: int) -> None:
        # Runs from a finalizer, possibly at interpreter exit: never raise, never block.
        if self.local:
            try:
                os.unlink(os.path.join(self.dir, f"{object_id:016x}"))
            except OSError:
                pass
        else:
            self._doomed.append(object_id)

    def _flush_deletes(self) -> None:
        doomed, self._doomed = self._doomed, []
        if doomed:
            try:
                self._client().delete(doomed)
            except errors.FlameError:
                pass  # the head deletes them when this client's lease runs out

    def close(self) -> None:
        """Delete what is queued for deletion and drop cached objects."""
        if not self.local:
            self._flush_deletes()
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    # -------------------------------------------------------------- reading

    def load(self, object_id: int) -> Any:
        """The value of an object."""
        return _serde.loads(self._bytes(object_id))

    def _bytes(self, object_id: int) -> Any:
        if self.local:
            return self._map_file(object_id)  # the page cache is the cache
        with self._lock:
            data = self._cache.get(object_id)
            if data is not None:
                self._cache.move_to_end(object_id)
                return data
        data = self._fetch(object_id)
        with self._lock:
            self._cache[object_id] = data
            self._cached_bytes += len(data)
            while len(self._cache) > 1 and (
                self._cached_bytes > _CACHE_BYTES or len(self._cache) > _CACHE_ENTRIES
            ):
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= len(old)
        return data

    def _map_file(self, object_id: int) -> Any:
        path = os.path.join(self.dir, f"{object_id:016x}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise errors.ObjectLostError(_lost(object_id)) from None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise errors.ObjectLostError(
                f"object {object_id:#x} cannot be read: {path} is a symbolic link; refusing "
                "to follow it"
            ) from None
        try:
            st = os.fstat(fd)  # the file opened, not whatever the name points to now
            problem = _untrusted(path, st)
            if problem is not None:
                raise errors.ObjectLostError(f"object {object_id:#x} cannot be read: {problem}")
            if st.st_size == 0:
                return b""
            return memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
        finally:
            os.close(fd)

    def _fetch(self, object_id: int) -> bytes:
        try:
            return self._client().get(object_id)
        except errors.ObjectLostError as e:  # NOT_FOUND from the head
            if "cannot be read:" in str(e):
                raise  # the head refused its file (another user's): it says which
            raise errors.ObjectLostError(_lost(object_id)) from e

    def _client(self) -> Any:
        if self._rpc is None:
            self._rpc = self._make_rpc()
        return self._rpc


# Fetched objects kept per process, so tasks that share an object download it once.
_CACHE_BYTES = 256 << 20
_CACHE_ENTRIES = 256


def _create_private(path: str) -> int:
    """A new file, 0600, for this process alone. One left at this name (by a process that
    died with this pid) is removed first, never truncated: its mode or its second name
    would survive a truncation."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        os.unlink(path)
        return os.open(path, flags, 0o600)


def _lost(object_id: int) -> str:
    return (
        f"object {object_id:#x} no longer exists: its ObjectRef was garbage-collected in the "
        "process that made it (keep a reference while tasks use it), or that process is gone"
    )
