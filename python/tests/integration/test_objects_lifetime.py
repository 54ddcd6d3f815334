"""Object lifetime across nodes (#12): after a session and its client end, no node's store
holds an object file (on a head and three nodes: the fixture of test_objects_multinode)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
from _three_nodes import NODES, Cluster, cluster, store_mb  # noqa: F401
from test_objects_multinode import add, block
from test_objects_nesting import total

import flame

_OBJECT_FILE = re.compile(r"^[0-9a-f]{16}$")


def _object_files(dirs: list[Path]) -> list[Path]:
    return [p for d in dirs if d.is_dir() for p in d.iterdir() if _OBJECT_FILE.match(p.name)]


def _wait_gone(what: str, check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = check()
        if not left:
            return
        assert time.monotonic() < deadline, f"{what}: still there after {timeout}s: {left}"
        time.sleep(0.1)


def _store_dirs(c: Cluster, tmp_path: Path) -> list[Path]:
    shm = Path(f"/dev/shm/flame-{os.getuid()}")
    dirs: list[Path] = []
    for name, proc in c.nodes.items():
        dirs += shm.glob(f"node-{proc.pid}-*")
        dirs += (tmp_path / name / "objects-spill").glob(f"node-{proc.pid}-*")
    return dirs


def test_nothing_is_left_in_the_stores_after_the_session_and_client_end(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    blocks = [block(i) for i in range(4)]  # results by reference, on the nodes
    sums = flame.get([add(blocks[0], blocks[1]), add(blocks[2], blocks[3])])
    assert sums == [float((1 << 19) * 1), float((1 << 19) * 5)]
    inner = flame.put(np.ones(1 << 18))
    outer = flame.put([inner, 3])
    assert total(outer).result(timeout=60) == float((1 << 18) + 3)
    dirs = _store_dirs(cluster, tmp_path)
    assert len(dirs) >= len(NODES), f"each node has its store dirs: {dirs}"
    assert _object_files(dirs), "the results are stored on the nodes"
    del blocks, inner, outer
    flame.shutdown()  # the session closes, the client disconnects
    _wait_gone("object files in the nodes' stores", lambda: _object_files(dirs))
