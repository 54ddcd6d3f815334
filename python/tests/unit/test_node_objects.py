"""The process side of a node's object store, without a node: object files read from the
memory dir or the spill dir (named in ``spill_dir``), damage reported as ObjectLostError
naming the object before a byte is unpickled, refs to node objects pickled as (id, size)
only, and a session's large common data travelling as a reference."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from flame import _object_file, _serde, errors
from flame._node_objects import NodeObjects
from flame.objects import ObjectRef, ObjectStore, common_data_ref, resolve_common_data


def _node(memory: Path) -> NodeObjects:
    # No socket client: these reads never need the node (the file is there, or damaged).
    return NodeObjects(7, str(memory / "node.sock"), str(memory), client=None)


def test_an_object_is_mapped_from_the_memory_or_the_spill_dir(tmp_path: Path) -> None:
    memory, spill = tmp_path / "mem", tmp_path / "spill"
    memory.mkdir()
    spill.mkdir()
    (memory / "spill_dir").write_text(str(spill))
    frame = _serde.dumps({"a": 1})
    _object_file.write_object(str(memory), 0x10, [frame])
    _object_file.write_object(str(spill), 0x11, [frame])
    node = _node(memory)
    assert _serde.loads(node.view(0x10)) == {"a": 1}
    assert _serde.loads(node.view(0x11)) == {"a": 1}


def test_a_damaged_object_is_reported_naming_it(tmp_path: Path) -> None:
    _object_file.write_object(str(tmp_path), 0xABC, [b"x" * 100])
    path = tmp_path / f"{0xABC:016x}"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1)
    with pytest.raises(errors.ObjectLostError, match="0xabc is damaged.*not read"):
        _node(tmp_path).view(0xABC)


def test_a_ref_to_a_node_object_pickles_as_its_id_and_size(tmp_path: Path) -> None:
    # A store with a node becomes the process's current one: the one before comes back
    # after (when the whole suite runs in one process, the embedded cluster's).
    before = ObjectStore._current
    store = ObjectStore(rpc=lambda: None, node=_node(tmp_path))
    try:
        ref = ObjectRef(0x5, 42, store)
        _, args = ref.__reduce__()
        assert args == (0x5, 42)
        assert len(pickle.dumps(ref)) < 120
    finally:
        store.close()
        ObjectStore._current = before


def test_common_data_passes_through_unless_it_is_a_reference() -> None:
    assert resolve_common_data(b"plain") == b"plain"
    marker = common_data_ref(ObjectRef(0x9, 3))
    assert len(marker) < 64 and marker != b"plain"
    # A marker with trailing bytes is user data, not a reference.
    assert resolve_common_data(marker + b"!") == marker + b"!"
