"""The object store of the node this process runs on, as a local process uses it.

Every node of a cluster owns one object store: a private memory directory of object files
(``flame._object_file`` format: a checked header, then the bytes) and a Unix socket,
``<memory dir>/node.sock``, on which the node serves ``NodeObjects``. A process of that
node (its executors; a client of ``flame-daemon start`` or of an embedded cluster) writes
an object as a file there and then *seals* it over the socket, so the node knows it; it
reads an object by mapping its file (zero copy), after asking the node to *pull* it from
another node when it is not there yet.

Where the node is comes from the environment of the node's executors (``FLAME_NODE_ID``,
``FLAME_NODE_SOCKET``, ``FLAME_NODE_OBJECTS``) or, for a client of the head's own node,
from the head's hello (``Connection.local_node``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any

from flame import _object_file, errors

__all__ = ["NodeObjects"]

NODE_ID_ENV = "FLAME_NODE_ID"
NODE_SOCKET_ENV = "FLAME_NODE_SOCKET"
NODE_OBJECTS_ENV = "FLAME_NODE_OBJECTS"
# In the memory dir: the path of the node's spill dir.
SPILL_DIR_FILE = "spill_dir"
# Mappings kept per process, so that the tasks of one executor reading one object fault its
# pages in once, not once per task (broadcast: 30 tasks on 2 executors). At most this many;
# one whose file is gone (deleted, spilled) is dropped when seen, and all are checked at
# most every _SWEEP_S seconds, so a deleted object's memory is not held for long.
_MAPPED_MAX = 32
_SWEEP_S = 0.5


def _socket_client(socket: str) -> Any:
    """The native client of the node's socket (``flame._core.NodeObjects``), or ``None``
    when this build has none (then there is no node store to use either)."""
    from flame import _core

    native = getattr(_core, "NodeObjects", None)
    return None if native is None else native(socket)


class NodeObjects:
    """The object store of this process's node.

    Args:
        node_id: The node's id (objects it stores are announced as held by it).
        socket: The node's Unix socket (``NodeObjects`` Seal / Pull).
        directory: The node's memory directory, where object files are written and mapped.
    """

    def __init__(self, node_id: int, socket: str, directory: str, client: Any = None) -> None:
        self.node_id = node_id
        self.socket = socket
        self.dir = directory
        self._client = client
        self._spill: str | None = None  # read on first need
        # id -> (path, (st_dev, st_ino), view): a mapping valid while that file is there.
        self._mapped: OrderedDict[int, tuple[str, tuple[int, int], memoryview]] = OrderedDict()
        self._mapped_lock = threading.Lock()
        self._swept = time.monotonic()

    @classmethod
    def from_env(cls) -> NodeObjects | None:
        """The node of an executor (or of a client a task started), from its environment;
        ``None`` outside a node or when this build cannot talk to one."""
        socket = os.environ.get(NODE_SOCKET_ENV, "")
        directory = os.environ.get(NODE_OBJECTS_ENV, "") or os.path.dirname(socket)
        try:
            node_id = int(os.environ.get(NODE_ID_ENV, "0"))
        except ValueError:
            node_id = 0
        return cls.at(node_id, socket, directory) if socket else None

    @classmethod
    def at(cls, node_id: int, socket: str, directory: str = "") -> NodeObjects | None:
        """The node whose socket is ``socket`` (its memory dir is the socket's directory
        unless given); ``None`` when ``socket`` is empty or unusable from this process."""
        if not socket or not os.path.exists(socket):
            return None
        client = None
        try:
            client = _socket_client(socket)
        except errors.FlameError:
            return None
        if client is None:
            return None
        return cls(node_id, socket, directory or os.path.dirname(socket), client)

    # -------------------------------------------------------------- writing

    def write(self, object_id: int, parts: list[Any]) -> int:
        """Store a new primary object made of ``parts`` (in order); its size in bytes.

        Raises:
            flame.InvalidArgumentError: the id is already stored.
            flame.FlameError: the file cannot be written, or the node refuses it.
        """
        try:
            size = _object_file.write_object(self.dir, object_id, parts)
        except FileExistsError:
            raise errors.InvalidArgumentError(
                f"object {object_id:#x} is already stored; an object is written once and "
                "never replaced"
            ) from None
        except OSError as e:
            raise errors.FlameError(f"cannot store object {object_id:#x} in {self.dir}: {e}") from e
        self.seal(object_id, size)
        return size

    def seal(self, object_id: int, size: int) -> None:
        """Tell the node that the file of ``object_id`` is written (it owns it from now)."""
        self._client.seal(object_id, size)

    # -------------------------------------------------------------- reading

    def view(self, object_id: int) -> memoryview:
        """The bytes of an object, mapped read-only: from the memory dir, else the spill
        dir, else pulled onto this node first (restored from disk or fetched from another
        node), as the store's contract says (``flame_core::objects::store``).

        Raises:
            flame.ObjectLostError: the object is gone, or its file is damaged (truncated,
                overwritten, another user's): never a byte of such a file is used.
        """
        found = self._find(object_id)
        if found is not None:
            return found
        # The node pins what it pulled until this process has mapped it (a copy evicted in
        # between would be gone for this reader), then is told it may move it again.
        try:
            self._client.pull([object_id], pin=True)
        except errors.ObjectLostError as e:
            raise errors.ObjectLostError(
                f"object {object_id:#x} no longer exists or cannot be reached: {e}"
            ) from None
        try:
            found = self._find(object_id)
        finally:
            self._client.release([object_id])
        if found is not None:
            return found
        raise errors.ObjectLostError(
            f"object {object_id:#x} is not in this node's store ({self.dir}) although the "
            "node pulled it (deleted meanwhile?)"
        )

    def _find(self, object_id: int) -> memoryview | None:
        cached = self._cached(object_id)
        if cached is not None:
            return cached
        for directory in (self.dir, self._spill_dir()):
            if not directory:
                continue
            try:
                view = _object_file.map_object(directory, object_id)
                self._keep(object_id, _object_file.object_path(directory, object_id), view)
                return view
            except FileNotFoundError:
                continue
            except _object_file.DamagedObjectError as e:
                raise errors.ObjectLostError(f"{e}; it was not read") from None
            except PermissionError as e:
                raise errors.ObjectLostError(f"object {object_id:#x} cannot be read: {e}") from None
        return None

    def _cached(self, object_id: int) -> memoryview | None:
        """The mapping kept of ``object_id`` if its file is still the one mapped."""
        now = time.monotonic()
        with self._mapped_lock:
            if now - self._swept > _SWEEP_S:
                self._swept = now
                for old in [i for i, (p, key, _) in self._mapped.items() if _file_key(p) != key]:
                    del self._mapped[old]
            entry = self._mapped.get(object_id)
            if entry is None:
                return None
            path, key, view = entry
            if _file_key(path) != key:
                del self._mapped[object_id]  # deleted or spilled: map what is there now
                return None
            self._mapped.move_to_end(object_id)
            return view

    def _keep(self, object_id: int, path: str, view: memoryview) -> None:
        key = _file_key(path)
        if key is None or not view.nbytes:
            return
        with self._mapped_lock:
            self._mapped[object_id] = (path, key, view)
            while len(self._mapped) > _MAPPED_MAX:
                self._mapped.popitem(last=False)

    def _spill_dir(self) -> str:
        """The node's spill dir (named in ``<memory dir>/spill_dir``); "" if none."""
        spill = self._spill
        if spill is None:
            try:
                with open(os.path.join(self.dir, SPILL_DIR_FILE), encoding="utf-8") as f:
                    spill = f.read().strip()
            except OSError:
                spill = ""
            self._spill = spill
        return spill


def _file_key(path: str) -> tuple[int, int] | None:
    """Which file ``path`` names now (device, inode); ``None`` when there is none."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev, st.st_ino
