"""A client never re-attaches to someone else's session, and one daemon owns a state dir.

The scenario of issue 10, item 1, with real processes: client A opens a session and waits on
a task; the daemon is killed, its state dir deleted, and a new daemon started on the same
port and dir, where ids start again at 1; client C opens its own session 1 with another
function. A's outstanding and new calls must fail with ``ClusterStateLostError`` — never
return C's results — and A's shutdown must leave C's session alone. Clients are separate
Python processes driven line by line over stdin, so every step happens when the test says.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import (
    executors_of,
    free_port,
    session_members,
    start_daemon,
    stop_daemon,
    wait_until_gone,
)

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes in /proc")

# A client process: `work(x)` answers (TAG, SIGN * x) after `nap` seconds. Commands on stdin,
# one answer line each on stdout: "ok <repr>" or "err <exception class> <message>".
CLIENT = """
import sys, time, flame

flame.init(address=sys.argv[1])

@flame.service
def work(x, nap=0.0):
    time.sleep(nap)
    return ({tag!r}, {sign} * x)

pending = []
for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd == "call":
            out = work(int(args[0])).result(timeout=float(args[1]))
        elif cmd == "submit":
            pending.append(work(int(args[0]), nap=float(args[1])))
            out = len(pending) - 1
        elif cmd == "wait":
            out = pending[int(args[0])].result(timeout=float(args[1]))
        elif cmd == "shutdown":
            out = flame.shutdown()
        else:
            break
        print("ok", repr(out), flush=True)
    except BaseException as e:
        print("err", type(e).__name__, str(e).replace("\\n", " "), flush=True)
"""


class ClientProcess:
    """One client in its own process and POSIX session."""

    def __init__(self, address: str, tag: str, sign: int) -> None:
        script = textwrap.dedent(CLIENT).replace("{tag!r}", repr(tag)).replace("{sign}", str(sign))
        env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )

    def ask(self, command: str) -> str:
        """Send one command; its answer line (the client bounds every wait itself)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, f"client exited: {self.proc.communicate(timeout=30)[1]}"
        return answer

    def close(self) -> None:
        try:
            self.proc.communicate("exit\n", timeout=60)
        finally:
            self.proc.kill()
            self.proc.wait()
        left = wait_until_gone(lambda: session_members(self.proc.pid))
        assert not left, f"client left processes behind: {left}"


def kill_daemon(proc: subprocess.Popen[str], address: str) -> None:
    """SIGKILL the daemon and every process it started (executors included)."""
    victims = {pid for pid, _ in session_members(proc.pid)}
    victims |= {pid for pid, _ in executors_of(address)}
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    assert proc.stderr is not None
    proc.stderr.close()
    left = wait_until_gone(lambda: [*session_members(proc.pid), *executors_of(address)])
    assert not left, f"processes of the killed daemon still run: {left}"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def start(state_dir: Path, port: int) -> subprocess.Popen[str]:
    return start_daemon(
        "start", "--host", "127.0.0.1", "--port", str(port), "--slots", "2",
        "--no-http", "--state-dir", str(state_dir), "--python", sys.executable,
        port=port,
    )  # fmt: skip


def test_a_client_never_gets_another_sessions_results_after_the_state_is_lost(
    state_dir: Path,
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    daemon = start(state_dir, port)
    a = c = None
    try:
        a = ClientProcess(address, "A", 1)
        assert a.ask("call 1 60") == "ok ('A', 1)"  # A's session 1 is open
        assert a.ask("submit 5 120") == "ok 0"  # and A waits on a long task

        kill_daemon(daemon, address)
        shutil.rmtree(state_dir)
        daemon = start(state_dir, port)

        c = ClientProcess(address, "C", -1)
        assert c.ask("call 10 60") == "ok ('C', -10)"  # C's session: id 1 again

        # A's outstanding future and its next call fail clearly; neither is C's result.
        waited = a.ask("wait 0 60")
        assert waited.startswith("err ClusterStateLostError"), waited
        assert "state dir was deleted or replaced" in waited, waited
        called = a.ask("call 10 60")
        assert called.startswith("err ClusterStateLostError"), called

        # A's shutdown (which closes A's sessions) leaves C's session open and working.
        assert a.ask("shutdown") == "ok None"
        assert c.ask("call 11 60") == "ok ('C', -11)"
        assert c.ask("shutdown") == "ok None"
    finally:
        for client in (a, c):
            if client is not None:
                client.close()
        stop_daemon(daemon)


def test_a_second_daemon_and_an_embedded_cluster_refuse_a_state_dir_in_use(
    state_dir: Path,
) -> None:
    port = free_port()
    daemon = start(state_dir, port)
    try:
        second = start_daemon(
            "start", "--port", str(free_port()), "--no-http", "--state-dir", str(state_dir)
        )  # fmt: skip
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1, err
        assert f"pid {daemon.pid}" in err, err

        embedded = subprocess.run(
            [sys.executable, "-c", f"import flame; flame.init(state_dir={str(state_dir)!r})"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert embedded.returncode != 0
        assert f"pid {daemon.pid}" in embedded.stderr, embedded.stderr
        assert str(state_dir) in embedded.stderr, embedded.stderr
    finally:
        stop_daemon(daemon)
