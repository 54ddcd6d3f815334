"""The embedded cluster's temporary state dirs: a dir whose owner process died is swept, a
live owner's dir and dirs that are not Flame's are left alone. Owners are real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flame import _tempstate

# Makes a state dir under argv[1], prints it, and dies without cleaning up.
DIE_OWNING = (
    "import os, sys; from flame import _tempstate; "
    "print(_tempstate.TempState(sys.argv[1]).path, flush=True); os._exit(0)"
)


def test_sweep_removes_dead_owners_dirs_only(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", DIE_OWNING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert Path(dead, _tempstate.LOCK).is_file()
    live = _tempstate.TempState(str(tmp_path))
    foreign = tmp_path / "flame-not-ours"
    foreign.mkdir()
    try:
        assert _tempstate.sweep(str(tmp_path)) == [dead]
        assert not Path(dead).exists()
        assert Path(live.path).is_dir() and foreign.is_dir()
    finally:
        live.remove()
    assert not Path(live.path).exists()
    live.remove()  # idempotent
