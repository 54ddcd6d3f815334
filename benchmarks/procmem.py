"""Memory of a family of processes, read from /proc (Linux only, no dependency).

A family is a root process, everything descended from it, and everything in its session
(the runner starts each measured process in a session of its own, so a process that was
re-parented to init after its parent exited is still found). :class:`MemorySampler`
samples the family from a thread of the *runner*, not of the measured process, so the
sampling costs the measured processes no GIL time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemorySampler", "Peak", "family", "leftovers"]

PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process, or None (gone, or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def family(root: int) -> list[int]:
    """``root`` and its live descendants, plus live processes of session ``root``."""
    parents: dict[int, int] = {}
    members = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(entry)
        if st is None:
            continue
        pid = int(entry)
        parents[pid] = st[0]
        if st[1] == root or pid == root:
            members.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    todo = [root] if root in parents else []
    while todo:
        pid = todo.pop()
        members.add(pid)
        todo.extend(children.get(pid, []))
    return sorted(members)


def leftovers(session: int) -> list[int]:
    """Live processes still in ``session`` (the measured process's own session)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(entry)
            if st is not None and st[1] == session:
                found.append(int(entry))
    return found


def _rss_pss(pid: int) -> tuple[int, int]:
    """Resident and proportional set size of one process in bytes (0 if it is gone)."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0, 0
    pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
    except OSError:
        pss = rss  # no smaps_rollup (old kernel) or gone: fall back
    return rss, pss


@dataclass
class Peak:
    rss: int = 0  # bytes, highest sum over the family seen in one sample
    pss: int = 0
    processes: int = 0
    samples: int = 0


class MemorySampler:
    """Samples a process family every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.peak = Peak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> Peak:
        self._stop.set()
        self._thread.join()
        return self.peak

    def _loop(self) -> None:
        while True:
            pids = family(self.root)
            sizes = [_rss_pss(pid) for pid in pids]
            peak = self.peak
            peak.rss = max(peak.rss, sum(r for r, _ in sizes))
            peak.pss = max(peak.pss, sum(p for _, p in sizes))
            peak.processes = max(peak.processes, sum(1 for r, _ in sizes if r))
            peak.samples += 1
            if self._stop.wait(self.interval):
                return
