"""What a run is recorded with: the machine, the versions, and the markdown table that
``run.py`` appends to RESULTS.md.

A table row is one (workload, metric, sizes). A cell is the median over the repeats with
[min–max]; with ``--compare`` the last column is the median of the per-repeat ratios
(each pair measured back to back, so slow phases of a shared machine hit both sides).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["machine", "table", "versions"]

HIGHER_IS_BETTER = {"tasks/s", "x", "GB/s"}


def machine() -> str:
    """Cores, CPU model, memory, kernel and the load average right now."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = " (" + line.split(":", 1)[1].strip() + ")"
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores{model}{mem}, {platform.system()} {platform.release()} "
        f"{platform.machine()}; load average at start {load}"
    )


def versions(python: str, packages: Sequence[str] = ("ray", "dask", "distributed", "numpy")) -> str:
    """Versions as seen by the interpreter that runs the measurements (``python``)."""
    found = {"python": platform.python_version()}
    # flame may be on the path without package metadata (the benchmark venv's .pth):
    # ask the interpreter itself.
    try:
        out = subprocess.run(
            [python, "-c", "import flame; print(flame.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        found["flame"] = out.stdout.strip() or "not installed"
    except (OSError, subprocess.TimeoutExpired):
        found["flame"] = "unknown"
    commit = _git_commit()
    if commit:
        found["flame"] += f" (commit {commit})"
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return ", ".join(f"{k} {v}" for k, v in found.items())


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return f"{value:.2f}"
    if unit == "s":
        return f"{value:.3g}"
    if abs(value) >= 100 or unit in ("processes", "tasks/s"):
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _cell(values: list[float | None], unit: str) -> str:
    nums = [v for v in values if v is not None]
    if not values:
        return "—"
    if not nums:
        return "n/a"
    mid = _fmt(statistics.median(nums), unit)
    if len(nums) > 1:
        mid += f" [{_fmt(min(nums), unit)}–{_fmt(max(nums), unit)}]"
    return f"{mid} {unit}"


def _sizes(sizes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in sizes.items())


def table(records: list[dict[str, Any]], systems: Sequence[str]) -> str:
    """The markdown table of ``records`` with one value column per system, and a ratio
    column when there are two systems."""
    rows: dict[tuple[str, str, str, str], dict[str, dict[int, float | None]]] = {}
    for r in records:
        key = (r["workload"], r["metric"], json.dumps(r["sizes"], sort_keys=True), r["unit"])
        rows.setdefault(key, {}).setdefault(r["system"], {})[r["repeat"]] = r["value"]

    head = ["workload", "metric", "sizes", *systems]
    if len(systems) == 2:
        head.append(f"{systems[0]} vs {systems[1]}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (workload, metric, sizes, unit), by_system in rows.items():
        cells = [workload, metric, _sizes(json.loads(sizes))]
        cells += [_cell(list(by_system.get(s, {}).values()), unit) for s in systems]
        if len(systems) == 2:
            cells.append(_ratio(by_system.get(systems[0], {}), by_system.get(systems[1], {}), unit))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(ours: dict[int, float | None], peer: dict[int, float | None], unit: str) -> str:
    """Median over repeats of how many times better ``ours`` is than ``peer`` on that
    repeat (ours/peer where higher is better, peer/ours where lower is)."""
    ratios = []
    for rep, a in ours.items():
        b = peer.get(rep)
        if a is None or b is None or a <= 0 or b <= 0:
            continue
        ratios.append(a / b if unit in HIGHER_IS_BETTER else b / a)
    if not ratios:
        return "n/a"
    text = f"{statistics.median(ratios):.2f}×"
    if len(ratios) > 1:
        text += f" [{min(ratios):.2f}–{max(ratios):.2f}]"
    return text


def command() -> str:
    """The command line of this run, as typed from the current directory."""
    exe = "python"
    try:
        rel = os.path.relpath(sys.executable)
        if not rel.startswith(".."):
            exe = rel  # e.g. benchmarks/.venv/bin/python
    except ValueError:
        pass
    return shlex.join([exe, *sys.argv])
