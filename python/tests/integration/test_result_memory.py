"""A large result must not stay in the daemon's memory once it is stored and delivered: the
daemon's resident memory goes back to about what it was (nothing keeps the bytes, and no
stream buffer keeps the size of the largest message it carried)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _procs import free_port, start_client, start_daemon, stop_daemon

RESULT_MB = 200

CLIENT = f"""
import sys
import flame

flame.init()

@flame.service
def big(n):
    return b"x" * n

print(len(big(1).result(60)), flush=True)
sys.stdin.readline()
print(len(big({RESULT_MB} << 20).result(120)), flush=True)
sys.stdin.readline()
flame.shutdown()
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def settled_rss_mb(pid: int, seconds: float = 3.0) -> float:
    """The lowest RSS seen over a few seconds (frees may take a moment to land)."""
    low = rss_mb(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        low = min(low, rss_mb(pid))
    return low


def test_daemon_memory_returns_after_a_large_result(tmp_path: Path) -> None:
    port = free_port()
    daemon = start_daemon(
        "start", "--host", "127.0.0.1", "--port", str(port), "--slots", "1",
        "--state-dir", str(tmp_path / "state"), "--python", sys.executable, "--http-port", "0",
        port=port,
    )  # fmt: skip
    client = start_client(CLIENT, port)
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "1"
        before = settled_rss_mb(daemon.pid)
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == str(RESULT_MB << 20)
        after = settled_rss_mb(daemon.pid)
        # The client and its stream are still there: nothing may be held for them either.
        assert after - before < RESULT_MB / 4, (
            f"daemon RSS {before:.0f} MB before, {after:.0f} MB after a {RESULT_MB} MB result"
        )
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.wait(timeout=60) == 0
    finally:
        client.kill()
        stop_daemon(daemon)
