"""A cluster over TLS on three loopback addresses (#11): a head on 127.0.0.2 with ``--tls``,
two nodes on 127.0.0.3 and 127.0.0.4 that join with the head's join token (mutual TLS with
certificates of the cluster CA), and a client with a user token. One node's certificate is
revoked mid-run (``flame-daemon token revoke-node``): the head drops it at once, its tasks
run on the other node, none is lost, and the revoked node cannot come back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from _procs import daemon_command, free_port, session_members, stop_daemon, wait_until_gone

import flame

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.x beyond .1 is Linux")

HEAD = "127.0.0.2"


class WhichNode(flame.FlameService):
    """Sleeps a little and answers the pid of its node (the executor's parent process)."""

    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        import os
        import time

        time.sleep(0.05)
        return f"{os.getppid()}:{ctx.input.decode()}".encode()


def spawn(*args: str, log: Path | None = None) -> subprocess.Popen[str]:
    """``flame-daemon ARGS`` in its own session; stderr to ``log`` (a pipe never read while
    the process runs could fill up), or a pipe."""
    return subprocess.Popen(
        [*daemon_command(), *args],
        stdout=subprocess.PIPE,
        stderr=log.open("w") if log else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def join_token_of(head: subprocess.Popen[str]) -> str:
    """The join token the head prints after its listening line."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = head.stdout.readline()  # type: ignore[union-attr]
        if not line:
            break
        if "--join-token" in line:
            return line.split("--join-token", 1)[1].split()[0]
    raise AssertionError(f"the head printed no join token: {head.stderr.read()}")  # type: ignore[union-attr]


def alive(conn: flame.Connection) -> set[str]:
    return {n["name"] for n in conn.cluster_info()["nodes"] if n["alive"]}


def test_three_hosts_over_tls_and_a_node_revoked_mid_run(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "head"
    address = f"https://{HEAD}:{port}"
    head = spawn("head", "--host", HEAD, "--port", str(port), "--tls", "--no-http",
                 "--state-dir", str(state))  # fmt: skip
    procs = [head]
    try:
        join = join_token_of(head)
        nodes = {}
        for name, ip in (("n3", "127.0.0.3"), ("n4", "127.0.0.4")):
            nodes[name] = spawn(
                "node", "--head", address, "--join-token", join, "--bind", ip, "--name", name,
                "--slots", "2", "--python", sys.executable, "--work-dir", str(tmp_path / name),
                "--state-dir", str(tmp_path / f"{name}-state"), log=tmp_path / f"{name}.log",
            )  # fmt: skip
            procs.append(nodes[name])
        admin = (state / "admin.token").read_text().strip()
        with flame.connect(address, token=admin, timeout=10) as conn:
            deadline = time.monotonic() + 30
            while alive(conn) != {"n3", "n4"}:
                assert time.monotonic() < deadline, f"nodes never joined: {alive(conn)}"
                time.sleep(0.1)
            # Each node came from its own address, over mutual TLS.
            peers = {
                n["name"]: n["address"].rsplit(":", 1)[0] for n in conn.cluster_info()["nodes"]
            }
            assert peers == {"n3": "127.0.0.3", "n4": "127.0.0.4"}, peers

            conn.register_application("which", WhichNode)
            n = 160  # 4 slots, 50 ms each: ~2 s of work
            with conn.create_session("which", slots=0) as session:
                futures = session.run_tasks([str(i).encode() for i in range(n)])
                # Revoke n3 once some tasks are done, while both nodes are busy.
                deadline = time.monotonic() + 60
                while sum(f.done() for f in futures) < n // 4:
                    assert time.monotonic() < deadline, "no progress before the revocation"
                    time.sleep(0.02)
                revoke = subprocess.run(
                    [*daemon_command(), "token", "revoke-node", "n3", "--head", address,
                     "--token", admin, "--state-dir", str(state)],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert revoke.returncode == 0, revoke.stderr
                revoked_at = time.monotonic()
                assert "n3" not in alive(conn), "the revoked node is still listed alive"

                answers = [f.result(timeout=60).decode().split(":") for f in futures]
            assert sorted(int(i) for _, i in answers) == list(range(n)), "a task was lost"
            by_node = Counter(pid for pid, _ in answers)
            n3, n4 = str(nodes["n3"].pid), str(nodes["n4"].pid)
            assert set(by_node) <= {n3, n4}, by_node
            assert by_node[n3] > 0 and by_node[n4] > 0, by_node
            # The revoked node cannot come back with its certificate: it exits, naming why,
            # and runs nothing more.
            code = nodes["n3"].wait(timeout=30)
            err = (tmp_path / "n3.log").read_text()
            assert code != 0 and "revoked" in err, (code, err[-2000:])
            assert not wait_until_gone(lambda: session_members(nodes["n3"].pid)), (
                "n3 left executors"
            )
            with conn.create_session("which", slots=0) as again:
                later = again.run_tasks([b"x"] * 8)
                assert {f.result(timeout=60).decode().split(":")[0] for f in later} == {n4}
            assert time.monotonic() - revoked_at < 60
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                stop_daemon(proc)
            else:
                for pid, _ in wait_until_gone(lambda p=proc: session_members(p.pid)):
                    os.kill(pid, 9)
