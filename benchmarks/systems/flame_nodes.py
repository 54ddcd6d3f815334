"""Flame on three nodes: ``flame-daemon head`` on 127.0.0.1 and three ``flame-daemon node``
processes bound to 127.0.0.2, .3 and .4 — three hosts as far as Flame can tell, on one
machine. One executor slot per node (three workers, where the single-machine systems have
``WORKERS``). The driver connects with ``flame.init(address)``.

Used by the data-movement workloads (``broadcast``, ``large_arg``) for issue #12's "Flame
with 3 nodes on loopback"; everything else is as in ``systems.flame``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from systems.flame import Adapter as LocalAdapter

NODES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def _daemon() -> list[str]:
    exe = Path(sys.executable).with_name("flame-daemon")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import flame.cli as c; c.daemon_main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Adapter(LocalAdapter):
    name = "flame3"

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="flame-bench-")
        root = Path(self._tmp.name)
        port = _free_port()
        self.address = f"http://127.0.0.1:{port}"
        state = root / "head"
        self._procs = [self._spawn("head", "--port", str(port), "--state-dir", str(state))]
        self._wait_listening(port)
        for i, ip in enumerate(NODES):
            token = self._join_token(state)
            self._procs.append(
                self._spawn(
                    "node", "--head", self.address, "--bind", ip, "--slots", "1",
                    "--name", f"n{i + 1}", "--python", sys.executable,
                    "--work-dir", str(root / f"n{i + 1}"),
                    "--state-dir", str(root / f"n{i + 1}-state"), "--join-token", token,
                )
            )  # fmt: skip
        self.flame.init(self.address)
        deadline = time.monotonic() + 30
        while len([n for n in self.flame.cluster_info()["nodes"] if n["alive"]]) < len(NODES):
            if time.monotonic() > deadline:
                raise RuntimeError("the three nodes did not register within 30 s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.flame.shutdown()
        for proc in reversed(self._procs):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self._procs:
            proc.wait(timeout=30)
        self._tmp.cleanup()

    def head_cpu_seconds(self) -> float:
        """CPU time the head process has used so far (see :func:`_cpu_seconds`)."""
        return _cpu_seconds(self._procs[0].pid)

    def node_cpu_seconds(self) -> float:
        """CPU time the three node daemons have used so far (not their executors)."""
        return sum(_cpu_seconds(p.pid) for p in self._procs[1:])

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*_daemon(), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _join_token(self, state: Path) -> str:
        out = subprocess.run(
            [*_daemon(), "token", "create", "--node", "--head", self.address,
             "--state-dir", str(state)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return out.split("--join-token", 1)[1].split()[0]

    def _wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"flame-daemon head did not listen on {port}") from None
                time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` has used so far: the sum of its threads' run times in /proc
    (nanoseconds, where /proc/<pid>/stat counts 10 ms ticks: too coarse for a run of a
    quarter second). A thread that ended meanwhile is not counted."""
    task_dir = f"/proc/{pid}/task"
    total = 0
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except OSError:
            continue  # the thread ended
    return total / 1e9
