"""A client on no node of its cluster (#12): the client of a bare `flame-daemon head` with two
`flame-daemon node` processes on 127.0.0.2 and .3. Its puts (and spilled arguments) are
uploaded once to a node the head picks; it reads what it lacks (its own puts, task
results) from the nodes that hold them; the head keeps no `<state_dir>/objects`; and a
bare head with no node refuses a put saying how to add one."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest

# The head-and-nodes fixture, shared (this module must not define a `cluster` fixture: that
# would replace the session's autouse one for its tests).
from _three_nodes import node_names, running
from test_objects_multinode import block

import flame
from flame import api, objects


@flame.service
def strided(a: np.ndarray) -> float:
    return float(a[::1024].sum())


def _listed() -> dict[int, dict]:
    return {o["object_id"]: o for o in api.runtime().conn.list_objects()["objects"]}


def _until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_client_on_no_node_puts_on_a_node_and_reads_from_the_nodes(tmp_path: Path) -> None:
    with running(tmp_path, {"n1": "127.0.0.2", "n2": "127.0.0.3"}) as c:
        assert api.runtime().conn.objects.node is None, "this client runs on no node"
        arr = np.arange((20 << 20) // 8, dtype=np.float64)  # 20 MiB
        ref = flame.put(arr)
        object_id = ref.id
        _until(lambda: object_id in _listed(), "the head learns where the put went")
        assert _listed()[object_id]["primary_node"] in node_names(), "on a node"
        expected = float(arr[::1024].sum())
        assert flame.get([strided(ref) for _ in range(10)], timeout=120) == [expected] * 10
        # Read back here: fetched from the node that holds it.
        assert np.array_equal(ref.get(), arr)
        # A spilled argument goes to a node as well, and a result this client lacks comes
        # from its node.
        spilled = np.ones(objects.SPILL_BYTES // 8 * 3)
        assert strided(spilled).result(timeout=60) == float(spilled[::1024].sum())
        assert float(block(3).result(timeout=60).sum()) == 3.0 * (1 << 19)
        # The head kept no object of its own.
        assert not (c.state / "objects").exists(), sorted(os.listdir(c.state))
        # Dropped: deleted from its node.
        del ref
        gc.collect()
        _until(lambda: object_id not in _listed(), "the dropped object is deleted")


def test_a_bare_head_without_nodes_refuses_a_put_naming_the_fix(tmp_path: Path) -> None:
    with running(tmp_path, {}) as c:
        with pytest.raises(flame.FlameError, match="no node with an object store has joined"):
            flame.put(np.ones(10))
        assert not (c.state / "objects").exists()
