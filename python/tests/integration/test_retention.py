"""Retention, with a real daemon: a closed session's tasks and results are deleted once the
configured `result_retention_ms` has passed and their space is given back; an open session
is never touched."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from _procs import free_port, start_client, start_daemon, stop_daemon

CLIENT = r"""
import sys
import flame

flame.init()

@flame.service
class Store:
    def big(self, i):
        return bytes([i]) * (256 << 10)

@flame.service
def small(i):
    return i

with Store() as s:  # its session closes at the end of the block
    assert len(flame.get([s.big(i) for i in range(24)])) == 24  # 6 MiB of results
assert flame.get([small(i) for i in range(10)]) == list(range(10))  # stays open
print("ready", flush=True)
sys.stdin.readline()  # until the test has looked
flame.shutdown()
"""


def sessions(db: Path) -> dict[int, tuple[str, int, int]]:
    """Each stored session: (state, its stored tasks, bytes of their results)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT s.id, s.state, COUNT(t.task_id), COALESCE(SUM(LENGTH(t.output)), 0) "
            "FROM sessions s LEFT JOIN tasks t ON t.session_id = s.id GROUP BY s.id"
        ).fetchall()
    finally:
        con.close()
    return {sid: (state, n, size) for sid, state, n, size in rows}


def test_closed_sessions_are_pruned_after_the_retention(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "flame.toml"
    config.write_text("result_retention_ms = 1000\n")
    port = free_port()
    daemon = start_daemon(
        "start", "--host", "127.0.0.1", "--port", str(port), "--slots", "2",
        "--state-dir", str(state), "--python", sys.executable, "--config", str(config),
        port=port,
    )  # fmt: skip
    db = state / "flame.db"
    client = start_client(CLIENT, port)
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "ready"
        # Wait for the event (the closed session gone), with a deadline.
        deadline = time.monotonic() + 20
        while True:
            now = sessions(db)
            if not any(state == "closed" for state, _, _ in now.values()):
                break
            assert time.monotonic() < deadline, f"closed session never pruned: {now}"
            time.sleep(0.2)
        # The open session and its results are all still there.
        assert [(s, n) for s, n, _ in now.values()] == [("open", 10)], now
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.wait(timeout=60) == 0
    finally:
        client.kill()
        stop_daemon(daemon)
    # The 6 MiB of pruned results do not sit in the file any more.
    size = db.stat().st_size
    assert size < 2 << 20, f"state file is {size} bytes after pruning 6 MiB of results"
