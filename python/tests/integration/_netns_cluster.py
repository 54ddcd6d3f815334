"""A Flame cluster on namespaced test hosts (netns_hosts, #13): a head on host 1 serving TLS
on its own address, nodes that join it from other hosts with its join token, and a client
process on a host of its own choosing, steered line by line (a test process in the machine's
own namespace cannot reach any of them). Settings go to the head's config file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from _procs import daemon_command
from netns_hosts import Hosts

PORT = 7000

# The client: connects, registers `sq` (x -> x*x after 0.2-0.5 s, at once for `run N fast`;
# each run leaves a marker file "<x>-<pid>" in the dir it is given), then answers one JSON
# line per command line.
CLIENT = r"""
import json, sys, flame

class Square(flame.FlameService):
    def on_task_invoke(self, ctx):
        import os, time
        x, marks, *fast = ctx.input.decode().split(":")
        open(os.path.join(marks, f"{x}-{os.getpid()}"), "w").close()
        if not fast:
            time.sleep(0.2 + (int(x) % 4) * 0.1)
        return str(int(x) ** 2).encode()

address, token, ca, marks = sys.argv[1:5]
conn = flame.connect(address, token=token, ca=ca, timeout=10)
conn.register_application("sq", Square)
futures, session = [], None
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd == "run":
            session = conn.create_session("sq", slots=0)
            tail = ":fast" if args[1:] == ["fast"] else ""
            inputs = [f"{i}:{marks}{tail}".encode() for i in range(int(args[0]))]
            futures = session.run_tasks(inputs)
            out = len(futures)
        elif cmd == "done":
            out = sum(f.done() for f in futures)
        elif cmd == "alive":
            out = sorted(n["name"] for n in conn.cluster_info()["nodes"] if n["alive"])
        elif cmd == "results":
            out = [int(f.result(timeout=float(args[0]))) for f in futures]
        elif cmd == "quit":
            if session is not None:
                session.close()
            conn.close()
            out = "bye"
        else:
            out = f"unknown command {cmd}"
    except Exception as e:
        out = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(out), flush=True)
    if cmd == "quit":
        break
"""


class NetCluster:
    """A head on host 1 and named nodes on other hosts (`nodes`: name -> host number)."""

    def __init__(
        self, hosts: Hosts, tmp: Path, nodes: dict[str, int], config: str, slots: int = 2
    ) -> None:
        self.hosts, self.tmp = hosts, tmp
        self.state = tmp / "head"
        self.address = f"https://{hosts.address(1)}:{PORT}"
        (tmp / "head.toml").write_text(config)
        self.head = hosts.run(
            1,
            [*daemon_command(), "head", "--config", str(tmp / "head.toml"),
             "--host", hosts.address(1), "--port", str(PORT), "--no-http",
             "--state-dir", str(self.state)],
            stdout=subprocess.PIPE, stderr=(tmp / "head.log").open("w"),
        )  # fmt: skip
        join = self._join_token()
        self.nodes = {}
        for name, host in nodes.items():
            self.nodes[name] = hosts.run(
                host,
                [*daemon_command(), "node", "--head", self.address, "--join-token", join,
                 "--bind", hosts.address(host), "--name", name, "--slots", str(slots),
                 "--python", sys.executable, "--work-dir", str(tmp / name),
                 "--state-dir", str(tmp / f"{name}-state")],
                stdout=subprocess.DEVNULL, stderr=(tmp / f"{name}.log").open("w"),
            )  # fmt: skip
        self.client: subprocess.Popen[str] | None = None

    def _join_token(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.head.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            if "--join-token" in line:
                return line.split("--join-token", 1)[1].split()[0]
        raise AssertionError(f"the head printed no join token: {self.log('head')}")

    def log(self, name: str) -> str:
        """What `name` (head, or a node) has logged so far."""
        return (self.tmp / f"{name}.log").read_text()

    def start_client(self, host: int = 1) -> None:
        admin = (self.state / "admin.token").read_text().strip()
        marks = self.tmp / "marks"
        marks.mkdir()
        self.client = self.hosts.run(
            host,
            [sys.executable, "-c", CLIENT, self.address, admin,
             str(self.state / "tls" / "ca.pem"), str(marks)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.read() == "ready"

    def read(self) -> object:
        line = self.client.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the client exited ({self.client.poll()})"  # type: ignore[union-attr]
        return json.loads(line)

    def ask(self, command: str) -> object:
        self.client.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.client.stdin.flush()  # type: ignore[union-attr]
        return self.read()

    def wait_alive(self, names: list[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (alive := self.ask("alive")) != sorted(names):
            assert time.monotonic() < deadline, f"alive nodes {alive}, wanted {names}"
            time.sleep(0.1)

    def marks(self) -> list[tuple[int, int]]:
        """(task input, executor pid) of every task run so far (started, at least)."""
        return [tuple(map(int, p.name.split("-"))) for p in (self.tmp / "marks").iterdir()]  # type: ignore[misc]

    def executors_in(self, host: int) -> list[int]:
        """Executor processes living in host `host`."""
        found = []
        for pid in self.hosts.pids(host):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"flame._executor" in cmd:
                found.append(pid)
        return found

    def stop(self) -> None:
        """Client first, then nodes and head by SIGTERM; `Hosts.close` kills what is left."""
        if self.client is not None and self.client.poll() is None:
            try:
                self.ask("quit")
                self.client.wait(timeout=20)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        for proc in [*self.nodes.values(), self.head]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.nodes.values(), self.head]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
