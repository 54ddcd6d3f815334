"""A daemon whose state dir is on a full disk (a 5 MB tmpfs): no future may succeed whose
result is not stored, new work is refused with a clear error naming the state file, and the
accepted work completes by itself once space returns.

Tests run as root in CI; where mounting is not permitted the test is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import free_port, start_daemon, stop_daemon

from flame import _serde

CLIENT = r"""
import json, os, sys, time
import flame

filler, out = sys.argv[1], sys.argv[2]
flame.init()

@flame.service
def blob(i):
    return (i, b"r" * 8192)

futs = [blob(i) for i in range(120)]
# The disk fills while these run: wait until nothing has finished for a while.
done, last = 0, time.monotonic()
while time.monotonic() - last < 4 and done < len(futs):
    now = sum(f.done() for f in futs)
    if now != done:
        done, last = now, time.monotonic()
    time.sleep(0.1)
before = [f.result()[0] for f in futs if f.done()]

refused = []
try:
    blob(1000).result(timeout=20)
except Exception as e:
    refused.append(f"{type(e).__name__}: {e}")

@flame.service
def other(x):
    return x

try:
    other(1).result(timeout=20)
except Exception as e:
    refused.append(f"{type(e).__name__}: {e}")

try:  # a new client
    flame.connect(os.environ["FLAME_ADDRESS"])
except Exception as e:
    refused.append(f"{type(e).__name__}: {e}")

os.remove(filler)  # space returns: the daemon resumes by itself
after = [f.result(timeout=60)[0] for f in futs]
json.dump({"before": before, "refused": refused, "after": after}, open(out, "w"))
flame.shutdown()
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 5 MB tmpfs, always unmounted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path, leave: int) -> None:
    """Fill the file system of ``path`` with one file, then give back ``leave`` bytes."""
    with open(path, "wb") as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
        size = f.tell()
    os.truncate(path, max(0, size - leave))


def stored_results(db: Path) -> list[int]:
    """The task results the state file holds (the first element of each returned tuple)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT output FROM tasks WHERE state = 3").fetchall()
    finally:
        con.close()
    values = [_serde.loads(out) for (out,) in rows]
    return sorted(v[0] for v in values if isinstance(v, tuple))  # blob's, not other's


def test_no_success_is_reported_before_it_is_stored(small_disk: Path, tmp_path: Path) -> None:
    state = small_disk / "state"
    port = free_port()
    daemon = start_daemon(
        "start", "--host", "127.0.0.1", "--port", str(port), "--slots", "2",
        "--state-dir", str(state), "--python", sys.executable, "--http-port", "0",
        port=port,
    )  # fmt: skip
    out = tmp_path / "out.json"
    try:
        fill(small_disk / "filler", leave=256 << 10)
        env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
        env["FLAME_ADDRESS"] = f"127.0.0.1:{port}"
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, str(small_disk / "filler"), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=150,
        )
        assert client.returncode == 0, client.stderr
    finally:
        stop_daemon(daemon)
    result = json.loads(out.read_text())
    # Every result reported while the disk was full, and after, is in the state file.
    stored = stored_results(state / "flame.db")
    lost = sorted(set(result["before"]) - set(stored))
    assert not lost, f"reported as succeeded but never stored: {lost}"
    assert sorted(result["after"]) == list(range(120)) == stored
    assert len(result["before"]) < 120, "the disk never filled up: the test proves nothing"
    # Refused, not accepted and lost; the message names the state file and the cause.
    assert len(result["refused"]) == 3, result
    for msg in result["refused"]:
        assert msg.startswith("StorageUnavailableError: "), msg
        assert str(state / "flame.db") in msg and "full" in msg, msg
