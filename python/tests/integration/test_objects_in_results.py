"""Refs inside task results (#12): objects a task puts and returns refs to stay alive while
the client holds the result (its future, or any ref read from it), inline or stored by
reference, and are deleted from the node's store once the result is dropped."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

import flame
from flame import api


@flame.service
def make_refs(n: int, start: float, big: int = 0) -> tuple:
    # Owned by this task's process, which drops its refs when the task returns: only the
    # result keeps these objects alive. `big` bytes more send the result by reference.
    refs = [flame.put(np.full(1 << 14, start + i)) for i in range(n)]
    return refs, np.zeros(big, dtype=np.uint8)


def _files(refs: list) -> list[Path]:
    node_dir = Path(api.runtime().conn.objects.node.dir)
    return [node_dir / f"{r.id:016x}" for r in refs]


def _wait_gone(paths: list[Path]) -> None:
    deadline = time.monotonic() + 30
    while any(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"{paths} still there after their result went"
        time.sleep(0.05)


def _drop_one(big: int) -> None:
    """A result dropped at once: returns when its objects have left the store (an event
    that orders the deletes before it: they go through the same head and node)."""
    dropped = make_refs(2, 0.0, big)
    files = _files(dropped.result(timeout=60)[0])
    del dropped
    gc.collect()
    _wait_gone(files)


def _check_kept_then_freed(big: int) -> None:
    assert api.runtime().conn.objects.node is not None, "the embedded cluster has a node"
    kept = make_refs(3, 10.0, big)
    refs, _ = kept.result(timeout=60)
    kept_files = _files(refs)
    assert all(p.exists() for p in kept_files)
    # Once a later result's objects are gone, the task process has let go of the first
    # result's refs too (it returned earlier): only the client's hold keeps those.
    _drop_one(big)
    assert all(p.exists() for p in kept_files), "the result's objects were freed while held"
    del kept  # the refs read from the result keep it (and so their objects)
    gc.collect()
    _drop_one(big)
    assert all(p.exists() for p in kept_files), "freed while refs read from the result live"
    assert [float(r.get()[0]) for r in refs] == [10.0, 11.0, 12.0]
    del refs
    gc.collect()
    _wait_gone(kept_files)


def test_refs_inside_an_inline_result_live_as_long_as_the_result() -> None:
    _check_kept_then_freed(big=0)


def test_refs_inside_a_result_stored_by_reference_live_as_long_as_the_result() -> None:
    _check_kept_then_freed(big=2 << 20)
