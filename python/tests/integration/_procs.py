"""Finding processes through /proc, to check that nothing is left behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

Process = tuple[int, str]  # (pid, command line)


def _scan() -> list[tuple[int, list[str], str]]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # zombies are gone, only not yet reaped
            found.append((int(entry.name), fields, cmdline))
    return found


def executors_of(address: str) -> list[Process]:
    """Live executor processes started for the cluster at ``address``."""
    return [(pid, cmd) for pid, _, cmd in _scan() if "flame._executor" in cmd and address in cmd]


def session_members(sid: int) -> list[Process]:
    """Live processes of the POSIX session ``sid``."""
    return [(pid, cmd) for pid, fields, cmd in _scan() if int(fields[3]) == sid]


def wait_until_gone(find: Callable[[], list[Process]], timeout: float = 15.0) -> list[Process]:
    """Poll ``find`` until it returns nothing or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        left = find()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
