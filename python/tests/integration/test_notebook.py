"""examples/notebook.ipynb runs headless in a Jupyter kernel, every cell without error, and
its embedded cluster leaves no process behind once the kernel is gone (with its last cell,
``flame.shutdown()``, or without it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from _procs import session_members, wait_until_gone
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[3] / "examples" / "notebook.ipynb"
KERNEL = "flame-test-python"


@pytest.fixture
def kernel_of_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs ipykernel on this interpreter (this venv), found first on
    JUPYTER_PATH, so no system-wide ``python3`` kernel of another Python is picked."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Flame tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("FLAME_ADDRESS", raising=False)  # the notebook starts its own cluster
    return KERNEL


@pytest.mark.parametrize("last_cell", ["shutdown", "dropped"])
def test_notebook_runs_every_cell_and_leaves_nothing_behind(
    kernel_of_this_python: str, tmp_path: Path, last_cell: str
) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "flame.shutdown()" in nb.cells[-1].source
    if last_cell == "dropped":  # the kernel's exit alone must stop the embedded cluster
        nb.cells.pop()
    kernel_sessions: list[int] = []
    client = NotebookClient(
        nb,
        kernel_name=kernel_of_this_python,
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    def note_kernel(**_: object) -> None:
        process = getattr(client.km.provisioner, "process", None)
        if process is not None and not kernel_sessions:
            kernel_sessions.append(os.getsid(process.pid))

    client.on_cell_execute = note_kernel
    client.execute()  # raises CellExecutionError naming the cell on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was drawn"
    # ipywidgets is in the test extra, so tqdm.auto draws a widget rather than text.
    widget = "application/vnd.jupyter.widget-view+json"
    assert any(widget in o.get("data", {}) for o in outputs), "no progress widget was shown"

    # jupyter_client starts the kernel in its own POSIX session; its executors inherit it.
    assert kernel_sessions, "the kernel's process was not seen"
    assert kernel_sessions[0] != os.getsid(0), "the kernel shares the test's session"
    if Path("/proc").is_dir():
        left = wait_until_gone(lambda: session_members(kernel_sessions[0]))
        assert not left, f"the notebook left processes behind: {left}"
