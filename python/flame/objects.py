"""Objects: values stored once in the cluster and passed to tasks by reference.

``flame.put(value)`` serializes ``value`` once into the cluster's object store and returns
an :class:`ObjectRef`. A task that receives a ref as an argument (anywhere in its
arguments) gets the value; numpy arrays and other buffers come back as zero-copy,
**read-only** views of the stored bytes. Task arguments that serialize to more than
:data:`SPILL_BYTES` are stored the same way automatically, and so are large task results
(see :class:`ResultMarker`), so a large array never travels through the task queue, the
database or the scheduler.

Where the bytes go: every node of a cluster owns an object store. A process running on a
node (its executors; the client of ``flame-daemon start`` or of an embedded cluster)
writes objects as files into its node's store and maps them to read them — one copy in all
(see :mod:`flame._node_objects`); an object stored on another node is pulled onto this one
first. A ref pickles as its id and size only: wherever it is read, the reader's own node
finds the bytes. Creators announce what they stored to the head on their task stream, so
the head knows an object before any task that refers to it.

A process on no node of the cluster (a client of a bare ``flame-daemon head``, or on
another machine) uses ``ObjectClient``: it uploads an object once, to the node the head
picks, and reads objects it lacks from the nodes that hold them. The head itself stores no
objects, only where they are.

Files are private: written 0600 in 0700 directories, and an object file is trusted only if
this process's user owns it and nobody else can write it. An object file that fails the
check, or whose header does not match its bytes, is never unpickled (its pickle could run
anyone's code): reading it raises :class:`flame.ObjectLostError` naming the object.

Lifetime: an object lives while its :class:`ObjectRef` (in the process that made it) is
referenced, or a task that uses it is unfinished; after that it is deleted (through the
head, from every node that holds it). Objects of a client that goes away are deleted by the
head when the client's lease runs out.
"""

from __future__ import annotations

import os
import struct
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

from flame import _serde, errors
from flame._node_objects import NodeObjects

__all__ = ["SPILL_BYTES", "ObjectRef", "ObjectStore", "ResultMarker"]

# Set by a node for its executors: the id of the cluster's state (its head's), which refs
# pickled in this cluster name.
CLUSTER_ENV = "FLAME_CLUSTER"

SPILL_BYTES = 1 << 20
"""Task arguments serializing to more than this many bytes are stored as an object."""

# Ids of puts keep bit 31 clear: ids with it set are task results (ObjectId::result_of).
_RESULT_BIT = 1 << 31
_MAX_PUT_COUNTER = _RESULT_BIT - 1

# Set in executor processes: refs in task arguments are replaced by their values there.
RESOLVE_REFS = False

_noted = threading.local()


def take_noted() -> list[ObjectRef] | None:
    """The refs serialized on this thread since the last call (their tasks keep them)."""
    return _noted.__dict__.pop("refs", None)


def collect_loaded() -> None:
    """Start noting the refs unpickled on this thread (see :func:`take_loaded`)."""
    _noted.loaded = []


def take_loaded() -> list[ObjectRef]:
    """The refs unpickled on this thread since :func:`collect_loaded`; stops noting."""
    return _noted.__dict__.pop("loaded", None) or []


def held_by(refs: list[ObjectRef], holder: ObjectRef) -> None:
    """``refs`` were read from a task's result, whose container ``holder`` makes the head
    keep their objects alive: each keeps ``holder`` alive while it lives."""
    for r in refs:
        r._holder = holder


def reads_of(refs: list[ObjectRef] | None) -> list[tuple[int, int]]:
    """``(id, size)`` of each distinct object among ``refs``: what a task reads."""
    if not refs:
        return []
    return list({r.id: (r.id, r.size) for r in refs}.values())


class ObjectRef:
    """A reference to a value stored in the cluster by :func:`flame.put`.

    Pass it to tasks in place of the value; ``ref.get()`` (or ``flame.get(ref)``) reads the
    value here.

    Attributes:
        id: The object's id.
        size: Its serialized size in bytes.
    """

    __slots__ = ("__weakref__", "_cluster", "_holder", "_inner", "_store", "id", "size")

    def __init__(
        self,
        object_id: int,
        size: int,
        store: ObjectStore | None = None,
        cluster: str | None = None,
    ) -> None:
        self.id = object_id
        self.size = size
        self._store = store
        # The cluster (its head's state id) the object is in; "" when unknown.
        self._cluster = cluster if cluster is not None else getattr(store, "cluster", "")
        # The refs pickled inside this object, when this process made it: kept while this
        # ref lives, so their deletes never reach the head before this object's
        # announcement, which makes the head keep them alive (see ObjectStore.put).
        self._inner: tuple[ObjectRef, ...] = ()
        # Read from a task's result: that result (its owned ref), which keeps this object
        # alive on the head while this ref lives (see held_by).
        self._holder: ObjectRef | None = None

    def __repr__(self) -> str:
        return f"<flame.ObjectRef {self.id:#x} ({self.size} bytes)>"

    def __reduce__(self) -> tuple[Any, ...]:
        # The task that carries this ref keeps it (and so the object) alive until it ends.
        _noted.__dict__.setdefault("refs", []).append(self)
        # Objects are on nodes: readers find them by id, through their own node or the
        # head's directory of locations.
        if not self._cluster:
            return (_rebuild, (self.id, self.size))
        # Pickled for a task (or inside a value) of this process's cluster, the ref must be
        # one of it (a task's process knows its cluster from its node: CLUSTER_ENV).
        _same_cluster(self.id, self._cluster, ObjectStore._current)
        return (_rebuild_in, (self._cluster, self.id, self.size))

    def get(self) -> Any:
        """Read the value (zero-copy for buffers when this process is on a node)."""
        store = self._store if self._store is not None else ObjectStore.current()
        _same_cluster(self.id, self._cluster, store)
        return store.load(self.id)


def _rebuild(object_id: int, size: int) -> Any:
    store = ObjectStore.current()
    if RESOLVE_REFS:
        return store.load(object_id)
    return _loaded(ObjectRef(object_id, size, store))


def _loaded(ref: ObjectRef) -> ObjectRef:
    loaded = _noted.__dict__.get("loaded")
    if loaded is not None:
        loaded.append(ref)
    return ref


def _rebuild_in(cluster: str, object_id: int, size: int) -> Any:
    # A ref that names its cluster: refused in a process of another cluster (ids are only
    # unique within one; the same id elsewhere is another object).
    store = ObjectStore.current()
    _same_cluster(object_id, cluster, store)
    if RESOLVE_REFS:
        return store.load(object_id)
    return _loaded(ObjectRef(object_id, size, store, cluster))


def _same_cluster(object_id: int, cluster: str, store: ObjectStore | None) -> None:
    here = getattr(store, "cluster", "")
    if cluster and here and cluster != here:
        raise errors.InvalidArgumentError(
            f"object {object_id:#x} belongs to another cluster (state {cluster}), not to "
            f"the one this process uses (state {here}): an ObjectRef is only valid in the "
            "cluster that made it"
        )


class ResultMarker(NamedTuple):
    """What a task returns in place of a result too large to travel inline: its result
    stays in the store of the executor's node as object ``id`` (``size`` bytes), and the
    client's future loads it when asked. Pickles by value, never resolved on the way."""

    id: int
    size: int


# Session common data stored as an object travels as this prefix, then the object's id and
# size (two little-endian u64): see `common_data_ref`.
_COMMON_DATA_MARK = b"\x00flame:common-data-object\x00"
_COMMON_DATA_REF = struct.Struct("<QQ")


def common_data_ref(ref: ObjectRef) -> bytes:
    """The common data a session is opened with when its real common data is ``ref``."""
    return _COMMON_DATA_MARK + _COMMON_DATA_REF.pack(ref.id, ref.size)


def resolve_common_data(data: bytes) -> bytes:
    """A session's common data as its service sees it: read from its object (through this
    node's store: fetched once per node) when it was stored as one."""
    mark = len(_COMMON_DATA_MARK)
    if len(data) != mark + _COMMON_DATA_REF.size or not data.startswith(_COMMON_DATA_MARK):
        return data
    object_id, _ = _COMMON_DATA_REF.unpack_from(data, mark)
    return bytes(ObjectStore.current()._bytes(object_id))


class ObjectStore:
    """The cluster's objects as seen from this process: its node's store, else the nodes
    reached through the head (an upload to the node it picks, a fetch from the holders).

    Args:
        rpc: a ``flame._core.ObjectClient``, or a callable making one on first use.
        next_id: makes fresh object ids (only in a process that puts objects).
        node: this process's node store, when it runs on a node of the cluster.
        announce: tells the head about objects this process stored (``(node_id, [(id,
            size)])``, on the task stream, before any task that uses them).
    """

    _current: ObjectStore | None = None
    _registry_lock = threading.Lock()

    def __init__(
        self,
        rpc: Callable[[], Any],
        next_id: Callable[[], int] | None = None,
        *,
        node: NodeObjects | None = None,
        announce: Callable[[int, list[tuple[int, int]]], None] | None = None,
        announce_container: Callable[[int, int, int, list[int]], None] | None = None,
    ) -> None:
        self.node = node
        # The cluster's identity (its head's state id), set by the connection; "" unknown.
        self.cluster = ""
        self._make_rpc = rpc
        self._rpc: Any = None
        self._next_id = next_id
        self._announce = announce
        self._announce_container = announce_container
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()  # id -> fetched bytes
        self._cached_bytes = 0
        self._doomed: list[int] = []  # owned objects to delete through the head
        # The finalizers of the refs to objects this process owns, by id: run at close.
        self._owned: dict[int, weakref.finalize] = {}
        self._deleter: _Deleter | None = None
        if next_id is not None or node is not None:
            with ObjectStore._registry_lock:
                ObjectStore._current = self  # a connection's store, or an executor's node

    @classmethod
    def current(cls) -> ObjectStore:
        """This process's store: the last one a connection made, else its node's (an
        executor's, from its environment), else the head at ``FLAME_ADDRESS``."""
        with cls._registry_lock:
            store = cls._current
        if store is not None:
            return store
        store = cls(_connect_env, node=NodeObjects.from_env())
        # An executor's: its node hands down the cluster's id (refs of others are refused).
        store.cluster = os.environ.get(CLUSTER_ENV, "")
        with cls._registry_lock:
            if cls._current is None:
                cls._current = store
            return cls._current

    # -------------------------------------------------------------- writing

    def put(self, value: Any) -> ObjectRef:
        """Serialize ``value`` into a new object owned by this process. Refs inside
        ``value`` stay alive while the new object does (the head counts them)."""
        outer = take_noted()  # refs noted by a caller still serializing: not ours
        try:
            parts, size = _serde.frame_parts(value)
            inner = take_noted() or []
        finally:
            if outer is not None:
                _noted.__dict__.setdefault("refs", [])[:0] = outer
        return self.store_parts(parts, size, inner)

    def store_parts(
        self, parts: list[Any], size: int, inner: list[ObjectRef] | None = None
    ) -> ObjectRef:
        """Store a serialized frame (its parts, in order) as a new object; ``inner``: the
        refs pickled inside it."""
        if self._next_id is None:
            raise errors.FlameError("this process cannot create objects (no connection)")
        object_id = self._next_id()
        if object_id & 0xFFFF_FFFF > _MAX_PUT_COUNTER:
            raise errors.InvalidArgumentError(
                f"this client ran out of object ids ({_MAX_PUT_COUNTER} puts); connect again"
            )
        if self.node is not None:
            size = self.node.write(object_id, parts)
            self._announce_new(self.node.node_id, object_id, size, inner)
        else:
            # A process on no node: uploaded once, to the node the head picks.
            self._flush_deletes()
            placed = self._client().place_and_put(object_id, [bytes(p) for p in parts])
            size = placed.size
            self._announce_new(placed.node_id, object_id, size, inner)
        ref = self.owned(object_id, size)
        if inner:
            ref._inner = tuple(inner)
        return ref

    def _announce_new(
        self, node_id: int, object_id: int, size: int, inner: list[ObjectRef] | None
    ) -> None:
        """Tell the head about a new object on a node, with the refs pickled inside it."""
        contains = sorted({r.id for r in inner or ()})
        if contains and self._announce_container is not None:
            self._announce_container(node_id, object_id, size, contains)
        elif self._announce is not None:
            self._announce(node_id, [(object_id, size)])

    def owned(self, object_id: int, size: int) -> ObjectRef:
        """A ref to an object this process owns: the object is deleted when the ref goes."""
        ref = ObjectRef(object_id, size, self)
        self._owned[object_id] = weakref.finalize(ref, self._release, object_id)
        return ref

    def _release(self, object_id: int) -> None:
        self._owned.pop(object_id, None)
        self._delete(object_id)

    def spill(self, parts: list[Any], size: int) -> bytes:
        """Store a task input as an object; the small frame to send in its place."""
        return _serde.dumps(self.store_parts(parts, size))

    def _delete(self, object_id: int) -> None:
        # Runs from a finalizer, possibly at interpreter exit: never raise, never block.
        self._doomed.append(object_id)
        # Objects are deleted by the head, from every node that holds them: asked from a
        # thread, so that dropping a ref never waits on the network.
        deleter = self._deleter
        if deleter is None:
            deleter = self._deleter = _Deleter(self)
        deleter.wake()

    def _flush_deletes(self) -> None:
        doomed = []
        while self._doomed:  # pops, not a swap: finalizers may append meanwhile
            doomed.append(self._doomed.pop())
        if doomed:
            try:
                self._client().delete(doomed)
            except errors.FlameError:
                pass  # the head deletes them when this client's lease runs out

    def close(self) -> None:
        """Delete the objects this process owns (the client is going, and so do they; refs
        still alive, even ones in garbage cycles not yet collected, can no longer be used)
        and drop cached objects."""
        for finalizer in list(self._owned.values()):
            finalizer()
        if self._deleter is not None:
            self._deleter.stop()  # waits for a batch in flight: the connection closes next
        self._flush_deletes()
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0
        with ObjectStore._registry_lock:
            if ObjectStore._current is self:
                ObjectStore._current = None

    # -------------------------------------------------------------- reading

    def load(self, object_id: int) -> Any:
        """The value of an object."""
        return _serde.loads(self._bytes(object_id))

    def _bytes(self, object_id: int) -> Any:
        if self.node is not None:
            return self.node.view(object_id)  # mapped: the page cache is the cache
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

    def _fetch(self, object_id: int) -> bytes:
        try:
            return self._client().locate_and_fetch(object_id)  # from a node that holds it
        except errors.ObjectLostError as e:  # no node holds it
            if object_id & _RESULT_BIT:
                raise  # a result: the head says why (its node was lost, ...)
            raise errors.ObjectLostError(f"{_lost(object_id)} ({e})") from e

    def _client(self) -> Any:
        if self._rpc is None:
            self._rpc = self._make_rpc()
        return self._rpc


class _Deleter:
    """Asks the head to delete dropped objects, in batches, from a daemon thread."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._event = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="flame-object-deletes", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._event.set()

    def stop(self) -> None:
        self._stopped = True
        self._event.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopped:
            self._event.wait()
            self._event.clear()
            self._store._flush_deletes()


def _connect_env() -> Any:
    """An ``ObjectClient`` to the head at ``FLAME_ADDRESS`` (an executor's head)."""
    from flame import _core, _credentials

    address = os.environ.get("FLAME_ADDRESS")
    if not address:
        raise errors.ObjectLostError(
            "cannot reach the cluster's objects: this process runs on no node of it and "
            "FLAME_ADDRESS is not set"
        )
    found = _credentials.lookup(address)
    return _core.ObjectClient(address, token=found.token, ca_pem=found.ca_pem)


# Fetched objects kept per process, so tasks that share an object download it once.
_CACHE_BYTES = 256 << 20
_CACHE_ENTRIES = 256


def _lost(object_id: int) -> str:
    return (
        f"object {object_id:#x} no longer exists: its ObjectRef was garbage-collected in the "
        "process that made it (keep a reference while tasks use it), or that process is gone"
    )
