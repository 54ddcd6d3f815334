"""The object store of the embedded cluster's node, reached the way processes of a node
reach it (#12): the client learns its socket from the head, writes an object file into the
node's memory dir, seals it over the socket and pulls it; executors are told where it is."""

from __future__ import annotations

import os
import time

import pytest

import flame
from flame import _core, _object_file, api
from flame._node_objects import NodeObjects
from flame.errors import InvalidArgumentError, ObjectLostError


@flame.service
def node_env() -> tuple[str, str, str]:
    get = os.environ.get
    return get("FLAME_NODE_SOCKET", ""), get("FLAME_NODE_OBJECTS", ""), get("FLAME_NODE_ID", "")


def _local_node() -> tuple[int, str]:
    local = api.runtime().conn._conn.local_node
    assert local is not None, "the embedded cluster names its node"
    return local


def test_a_written_file_is_sealed_pulled_and_mapped() -> None:
    node_id, socket = _local_node()
    memory = os.path.dirname(socket)
    store = _core.NodeObjects(socket)
    assert store.socket_path == socket
    object_id = (api.runtime().conn.client_id << 32) | 0x7FFF_0001
    size = _object_file.write_object(memory, object_id, [b"abc", b"defg"])
    store.seal(object_id, size)
    assert store.pull([object_id]) == [(object_id, 7)]
    assert bytes(_object_file.map_object(memory, object_id)) == b"abcdefg"
    unknown = (api.runtime().conn.client_id << 32) | 0x1234
    with pytest.raises(ObjectLostError, match=f"{unknown:#x} is not known"):
        store.pull([unknown])
    # A forged id (no owner) is refused as such, once (not once per hop).
    with pytest.raises(InvalidArgumentError, match=r"^invalid argument: object id 0x1234 is not"):
        store.pull([0x1234])
    # A damaged file is refused with the format's words and removed.
    damaged = object_id + 1
    _object_file.write_object(memory, damaged, [b"xyz"])
    path = os.path.join(memory, f"{damaged:016x}")
    with open(path, "r+b") as f:
        f.truncate(_object_file.HEADER_BYTES + 2)
    with pytest.raises(ObjectLostError, match="is damaged"):
        store.seal(damaged, 3)
    assert not os.path.exists(path)
    # Announced and owned like a put, the object goes from the node when its ref does.
    conn = api.runtime().conn
    conn._conn.announce_objects(node_id, [(object_id, size)])
    ref = conn.objects.owned(object_id, size)
    del ref
    kept = os.path.join(memory, f"{object_id:016x}")
    deadline = time.monotonic() + 30
    while os.path.exists(kept):
        assert time.monotonic() < deadline, "the node deletes the object"
        time.sleep(0.05)


def test_executors_are_told_where_their_node_store_is() -> None:
    node_id, socket = _local_node()
    got = node_env().result(timeout=60)
    assert got == (socket, os.path.dirname(socket), str(node_id))


def test_a_process_maps_an_object_once_until_its_file_goes() -> None:
    # Tasks of one executor reading one object share a mapping (its pages are faulted in
    # once, not per task); once the object is deleted the mapping is not handed out again.
    node_id, socket = _local_node()
    node = NodeObjects.at(node_id, socket)
    assert node is not None
    conn = api.runtime().conn
    object_id = (conn.client_id << 32) | 0x7FFF_0101
    size = node.write(object_id, [b"x" * 4096, b"yz"])
    first, second = node.view(object_id), node.view(object_id)
    assert bytes(first) == b"x" * 4096 + b"yz"
    assert second.obj is first.obj, "the second read reuses the first one's mapping"
    conn._conn.announce_objects(node_id, [(object_id, size)])
    ref = conn.objects.owned(object_id, size)
    del ref
    path = os.path.join(node.dir, f"{object_id:016x}")
    deadline = time.monotonic() + 30
    while os.path.exists(path):
        assert time.monotonic() < deadline, "the node deletes the object"
        time.sleep(0.05)
    with pytest.raises(ObjectLostError):
        node.view(object_id)
    assert object_id not in node._mapped
