"""Private files, with real clusters: under umask 0 the embedded cluster's state dir, its
database, lock, object dir and the object files ``flame.put`` writes are 0700/0600; and an
object file another OS user owns, or others can write, is never read — not mapped by a
client or an executor on the node's machine (a node's object server refuses it too:
rust/daemon/tests/object_transfer.rs) — with an error that names the file and its owner.

Chowning to another user needs root (the test machines run as root); those cases are
skipped elsewhere."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import flame
from flame import api

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@flame.service
def length(value: list[int]) -> int:
    return len(value)


# Under umask 0: an embedded cluster on a state dir it creates, one object put from this
# (same-machine) client, then an embedded cluster on its default temporary state dir.
_MODES_CLIENT = """
import json, os, sys
os.umask(0)
import flame
from flame import api

def mode(p):
    return oct(os.stat(p).st_mode & 0o777)

state = sys.argv[1]
flame.init(slots=1, state_dir=state)
store = api.runtime().conn.objects
assert store.node is not None, "the client uses its node's object store"
ref = flame.put(list(range(100)))
paths = {
    "state dir": state,
    "flame.db": os.path.join(state, "flame.db"),
    "flame.db-wal": os.path.join(state, "flame.db-wal"),
    "flame.db-shm": os.path.join(state, "flame.db-shm"),
    "flame.lock": os.path.join(state, "flame.lock"),
    "objects": store.node.dir,
    "spill dir": store.node._spill_dir(),
    "object": os.path.join(store.node.dir, f"{ref.id:016x}"),
}
modes = {name: mode(p) for name, p in paths.items()}
# And whatever else the head keeps there (credentials, certificates...): the same.
for root, dirs, files in os.walk(state):
    for name in dirs + files:
        modes[os.path.join(root, name)] = mode(os.path.join(root, name))
flame.shutdown()
flame.init(slots=1)
modes["temporary state dir"] = mode(api.runtime().temp_dir)
modes["its owner.lock"] = mode(os.path.join(api.runtime().temp_dir, "owner.lock"))
modes["its objects"] = mode(api.runtime().conn.objects.node.dir)
flame.shutdown()
print(json.dumps(modes))
"""


def test_state_and_object_files_are_private_under_umask_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MODES_CLIENT, str(tmp_path / "new" / "state")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout.strip().splitlines()[-1])
    dirs = {"state dir", "objects", "spill dir", "temporary state dir", "its objects"}
    dirs |= {name for name in modes if name.startswith("/") and Path(name).is_dir()}
    expected = {name: "0o700" if name in dirs else "0o600" for name in modes}
    assert modes == expected
    assert oct((tmp_path / "new").stat().st_mode & 0o777) == "0o700"


def _object_file(ref: flame.ObjectRef) -> str:
    return os.path.join(api.runtime().conn.objects.node.dir, f"{ref.id:016x}")


def _deleted(path: str) -> None:
    """Wait (bounded) until a dropped object's file is deleted: later tests count the files
    of the shared cluster, and the refusals' tracebacks hold the ref in cycles."""
    gc.collect()
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(path), f"{path} was not deleted"


@needs_root
def test_an_object_file_another_user_owns_is_never_mapped() -> None:
    assert api.runtime().conn.objects.node is not None, "the client uses its node's store"
    ref = flame.put(list(range(10)))
    path = _object_file(ref)
    os.chown(path, NOBODY, -1)
    refused = f"{path} belongs to uid {NOBODY}, not to uid 0"
    with pytest.raises(flame.ObjectLostError, match=refused):
        ref.get()
    # An executor (also on the head's machine) refuses it as well, and the task says why.
    with pytest.raises(flame.ObjectLostError, match=refused):
        length(ref).result(timeout=60)
    os.chown(path, 0, -1)
    assert ref.get() == list(range(10))
    del ref
    _deleted(path)


def test_an_object_file_others_can_write_is_never_mapped() -> None:
    ref = flame.put(list(range(10)))
    path = _object_file(ref)
    os.chmod(path, 0o666)
    with pytest.raises(flame.ObjectLostError, match=r"can be written by other users \(mode 666\)"):
        ref.get()
    os.chmod(path, 0o600)
    assert length(ref).result(timeout=60) == 10
    del ref
    _deleted(path)
