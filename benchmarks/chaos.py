"""Chaos: thousands of short tasks while executors and nodes are SIGKILLed and the session
manager itself is killed and restarted. Nothing may be lost, wrong, or delivered twice.

    python benchmarks/chaos.py [--tasks 10000] [--slots 2] [--kill-every 0.2] [--restarts 1]
                               [--nodes N --node-kills K]

By default runs ``flame-daemon start`` (session manager and node in one process) as a
separate process on a free port with its own state directory; with ``--nodes N`` (N ≥ 2),
one ``flame-daemon head`` and N ``flame-daemon node`` processes on loopback instead, the
``--slots`` split among the nodes. A client (``flame.connect``) keeps a window of tasks in
flight; each task works a few ms and returns its input squared (and its executor's pid).

- A thread SIGKILLs a random executor every ``--kill-every`` seconds (only executors that
  have already returned a result, so that start-up is not what gets killed).
- ``--node-kills`` times, a random node process is SIGKILLed (its process group: its
  executors, in groups of their own, must be stopped by the session manager) and a
  replacement node with a new name is started ``--replace-after`` seconds later.
- ``--restarts`` times, the session manager (the daemon, or the head) is SIGKILLed and
  started again on the same port and state directory: the client must reconnect by itself,
  and so must the nodes.

The kills and restarts are spread evenly over the run (by tasks finished). Prints a summary;
exits 1 if a task was lost, failed, wrong or delivered twice, a process exited uncleanly at
the final stop, or any process this run started (daemon, head, nodes and all their
executors) was left behind. ``python/tests/integration/test_chaos.py`` runs a short version
of the same scenario in CI (it imports this file). Linux only (processes are found through
/proc). Logs go to the state directory (``--state-dir`` keeps it; filter with ``RUST_LOG``).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import flame
from flame.futures import SUCCEEDED

__all__ = ["Cluster", "Daemon", "ExecutorKiller", "Process", "Report", "Square", "run"]


class Square(flame.FlameService):
    """Input ``str(x)`` → output ``"{x*x} {pid}"``, after ``common_data`` ms of work."""

    def on_session_enter(self, ctx: flame.SessionContext) -> None:
        self.work = float(ctx.common_data or b"0") / 1000

    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        x = int(ctx.input)
        deadline = time.perf_counter() + self.work
        while time.perf_counter() < deadline:  # busy, like a real short task
            pass
        return f"{x * x} {os.getpid()}".encode()


# ---------------------------------------------------------------- processes


def _proc_table() -> list[tuple[int, int, str]]:
    """(pid, session id, command line) of every live (non-zombie) process."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found.append((int(entry.name), int(fields[3]), cmdline))
    return found


def executor_pids(port: int) -> list[int]:
    """Live executor processes started for the session manager listening on ``port``."""
    return [
        pid
        for pid, _, cmd in _proc_table()
        if "flame._executor" in cmd and f"127.0.0.1:{port} " in f"{cmd} "
    ]


def session_members(sessions: Iterable[int]) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes of any of these process sessions."""
    wanted = set(sessions)
    return [(pid, cmd) for pid, sid, cmd in _proc_table() if sid in wanted]


def wait_gone(sessions: Iterable[int], timeout: float = 15.0) -> list[tuple[int, str]]:
    """Processes of these sessions still alive after ``timeout`` s (should be none)."""
    sessions = list(sessions)
    deadline = time.monotonic() + timeout
    while True:
        left = session_members(sessions)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Process:
    """One ``flame-daemon`` command, run in a process session of its own (so that it and
    every executor it starts can be found afterwards), which can crash and come back.

    Its output goes to ``log_path`` (a pipe nobody reads would block it once full). With a
    ``port``, :meth:`start` waits until something listens there.
    """

    def __init__(self, args: list[str], log_path: Path, port: int | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.sessions: list[int] = []  # every run's process session (= its pid)

    def start(self, timeout: float = 30.0) -> None:
        """Start it (and with a port, wait until it listens).

        Raises:
            RuntimeError: it exited or did not listen within ``timeout`` seconds.
        """
        exe = shutil.which("flame-daemon")
        command = [exe] if exe else [sys.executable, "-c", "import flame.cli as c; c.daemon_main()"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*command, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.sessions.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while self.port is not None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flame-daemon exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"flame-daemon did not listen:\n{self.tail()}") from None
                time.sleep(0.05)

    def crash(self) -> None:
        """SIGKILL its process group: only it, not its executors (each in a group of its own),
        which must notice by themselves or be told to stop."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; its exit code (``None`` if it had to be killed)."""
        self.terminate()
        return self.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM, if it runs: a graceful stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int | None:
        """Its exit code; SIGKILL after ``timeout`` s (then ``None``)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def leftovers(self, timeout: float = 15.0) -> list[tuple[int, str]]:
        """Processes of any of its runs still alive after ``timeout`` s (should be none)."""
        return wait_gone(self.sessions, timeout)

    def tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)


class Daemon(Process):
    """``flame-daemon start``: the session manager and a node in one process, listening on
    ``port`` (default: a free one), its state and ``daemon.log`` in ``state_dir``."""

    def __init__(self, state_dir: str, slots: int, port: int | None = None) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        args = ["start", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--slots", str(slots), "--state-dir", state_dir]
        super().__init__(args, Path(state_dir, "daemon.log"), port)
        self.state_dir = state_dir
        self.slots = slots
        self.port: int = port
        self.address = f"127.0.0.1:{port}"

    def launch(self) -> None:
        """Start it (the same as :meth:`start`; :class:`Cluster` starts nodes too)."""
        self.start()

    def orphans(self, timeout: float = 15.0) -> list[tuple[int, str]]:
        """Nothing is killed but the daemon itself, which restarts: none."""
        return []

    def exits(self) -> dict[str, int | None]:
        """Stop it; its exit code by name."""
        return {"daemon": self.stop()}


class Cluster:
    """``flame-daemon head`` and ``nodes`` × ``flame-daemon node`` on loopback, ``slots`` split
    among the nodes; in ``root``: the head's state (``state/``), every process's log
    (``head.log``, ``node-1.log``, ...) and the executors' work dirs (``work/node-1``, ...).

    :meth:`crash` and :meth:`start` act on the head, like :class:`Daemon`'s on the daemon:
    the nodes notice and register again by themselves.
    """

    def __init__(self, root: str, slots: int, nodes: int, port: int | None = None) -> None:
        if not 2 <= nodes <= slots:
            raise ValueError(f"a cluster needs 2 to {slots} (slots) nodes, not {nodes}")
        self.root = Path(root)
        (self.root / "work").mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        args = ["head", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--state-dir", str(self.root / "state")]
        self.head = Process(args, self.root / "head.log", self.port)
        self.node_slots = [slots // nodes + (i < slots % nodes) for i in range(nodes)]
        self.nodes: dict[str, tuple[Process, int]] = {}  # live nodes: name → (process, slots)
        self.killed: list[Process] = []
        self._names = 0
        self._join: str | None = None  # a join token, made with the head's admin.token

    def launch(self, timeout: float = 30.0) -> None:
        """Start the head and the nodes; wait until every node has registered.

        Raises:
            RuntimeError: a process did not start, or the nodes did not register in time.
        """
        self.head.start()
        for slots in self.node_slots:
            self.add_node(slots)
        deadline = time.monotonic() + timeout
        with flame.connect(self.address, client_name="chaos-setup") as conn:
            while sum(n["alive"] for n in conn.cluster_info()["nodes"]) < len(self.node_slots):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nodes did not register:\n{self.tail()}")
                time.sleep(0.05)

    def start(self) -> None:
        self.head.start()

    def crash(self) -> None:
        self.head.crash()

    def add_node(self, slots: int) -> str:
        """Start a node with a new name; returns the name (it registers in the background)."""
        self._names += 1
        name = f"node-{self._names}"
        if self._join is None:
            self._join = self.join_token()
        args = ["node", "--head", f"http://{self.address}", "--slots", str(slots)]
        args += ["--join-token", self._join, "--state-dir", str(self.root / "nodes" / name)]
        args += ["--name", name, "--python", sys.executable]
        args += ["--work-dir", str(self.root / "work" / name)]
        node = Process(args, self.root / f"{name}.log")
        node.start()
        self.nodes[name] = (node, slots)
        return name

    def join_token(self) -> str:
        """A join token for any number of nodes, made as the head's admin would."""
        exe = shutil.which("flame-daemon") or "flame-daemon"
        args = ["token", "create", "--node", "--head", f"http://{self.address}"]
        args += ["--state-dir", str(self.root / "state")]
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        if out.returncode != 0 or "--join-token" not in out.stdout:
            raise RuntimeError(f"no join token: {out.stderr}")
        return out.stdout.split("--join-token", 1)[1].split()[0]

    def kill_node(self, rng: random.Random) -> tuple[str, int]:
        """SIGKILL a random live node (its process group); its name and slots."""
        name = rng.choice(sorted(self.nodes))
        node, slots = self.nodes.pop(name)
        node.crash()
        self.killed.append(node)
        return name, slots

    def orphans(self, timeout: float = 15.0) -> list[tuple[int, str]]:
        """Processes of the killed nodes (executors the session manager should have stopped)
        still alive after ``timeout`` s, while the cluster still runs (should be none)."""
        return wait_gone([s for node in self.killed for s in node.sessions], timeout)

    def exits(self) -> dict[str, int | None]:
        """Stop the nodes, then the head; exit codes by name (the killed nodes' are not
        asked: they were SIGKILLed)."""
        for node, _ in self.nodes.values():
            node.terminate()  # all at once: each drains on its own
        codes = {name: node.wait() for name, (node, _) in self.nodes.items()}
        codes["head"] = self.head.stop()
        return codes

    def leftovers(self, timeout: float = 15.0) -> list[tuple[int, str]]:
        """Processes of any run of the head or of any node, killed ones included, still
        alive after ``timeout`` s (should be none)."""
        nodes = [node for node, _ in self.nodes.values()] + self.killed
        return wait_gone(self.head.sessions + [s for n in nodes for s in n.sessions], timeout)

    def tail(self, lines: int = 30) -> str:
        logs = [self.root / "head.log", *sorted(self.root.glob("node-*.log"))]
        return "\n".join(f"== {log.name}\n{_tail(log, lines)}" for log in logs)


class ExecutorKiller(threading.Thread):
    """Every ``every`` s, SIGKILLs one random live executor of the daemon on ``port`` among
    the pids ``eligible()`` returns."""

    def __init__(
        self, port: int, every: float, eligible: Callable[[], set[int]], seed: int = 0
    ) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.port = port
        self.every = every
        self.eligible = eligible
        self.kills = 0
        self._rng = random.Random(seed)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            live = sorted(set(executor_pids(self.port)) & self.eligible())
            if not live:
                continue
            try:
                os.kill(self._rng.choice(live), signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass  # it exited on its own meanwhile

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ---------------------------------------------------------------- the scenario


@dataclass
class Report:
    """What a chaos run saw."""

    tasks: int
    setup: str = ""  # what ran: the daemon, or a head and how many nodes; slots
    correct: int = 0
    wrong: list[int] = field(default_factory=list)  # inputs whose result was not x*x
    failed: collections.Counter[str] = field(default_factory=collections.Counter)  # by type
    lost: int = 0  # futures unresolved at the end (or never submitted)
    lost_inputs: list[int] = field(default_factory=list)
    duplicated: int = 0  # extra completions (on the wire or resolving a future)
    down_batches: list[int] = field(default_factory=list)  # first input of each batch
    # submitted while the daemon was down
    executor_kills: int = 0
    node_kills: int = 0  # node processes SIGKILLed (each replaced by a new node)
    retries: int = 0  # sum of attempts - 1
    daemon_restarts: int = 0  # of the session manager: the daemon, or the head
    daemon_exit: int | None = None  # exit code of the final graceful stop: with nodes, 0 if
    # the head and every live node exited 0, else the first other code
    exits: dict[str, int | None] = field(default_factory=dict)  # by process name
    leftovers: list[tuple[int, str]] = field(default_factory=list)  # processes left behind:
    # of a killed node before the final stop, or of any process this run started after it
    elapsed: float = 0.0
    log_tail: str = ""
    stuck_session: str = ""  # the daemon's counts when tasks were still unfinished

    @property
    def ok(self) -> bool:
        return (
            self.correct == self.tasks
            and not (self.wrong or self.failed or self.lost or self.duplicated)
            and not self.leftovers
            and self.daemon_exit == 0
        )

    def summary(self) -> str:
        failed = f"{sum(self.failed.values())} {dict(self.failed)}" if self.failed else "0"
        setup = f"{self.setup}: " if self.setup else ""
        return (
            f"{setup}tasks {self.tasks}, correct {self.correct}, wrong {len(self.wrong)}, "
            f"failed {failed}, lost {self.lost}, "
            f"duplicated {self.duplicated}; executor kills {self.executor_kills}, "
            f"node kills {self.node_kills}, retries {self.retries}, "
            f"daemon restarts {self.daemon_restarts}; "
            f"daemon exit {self.daemon_exit}, leftovers {len(self.leftovers)}; "
            f"elapsed {self.elapsed:.1f} s ({self.tasks / max(self.elapsed, 1e-9):,.0f} tasks/s)"
        )


def run(
    tasks: int = 10_000,
    *,
    slots: int = 2,
    kill_every: float = 0.2,
    restarts: int = 1,
    nodes: int = 1,
    node_kills: int = 0,
    replace_after: float = 0.5,
    quiet_restarts: bool = False,
    work_ms: float = 2.0,
    window: int = 500,
    batch: int = 100,
    max_retries: int = 50,
    timeout: float = 600.0,
    seed: int = 0,
    state_dir: str | None = None,
) -> Report:
    """Run the scenario against a fresh daemon or cluster (stopped at the end) and report.

    Args:
        tasks: How many tasks to run.
        slots: The executor slots (with nodes, split among them).
        kill_every: Seconds between executor kills (0: no kills).
        restarts: How many times to crash and restart the session manager (the daemon, or
            the head), evenly spread.
        nodes: 1: one ``flame-daemon start``; more: a ``flame-daemon head`` and this many
            ``flame-daemon node`` processes (at most ``slots``).
        node_kills: How many times to SIGKILL a random node, evenly spread (needs nodes ≥ 2).
        replace_after: Seconds from a node kill to the start of its replacement.
        quiet_restarts: Submit nothing from a crash until every task in flight then has
            finished (by default submissions go on: some while the daemon is down, some
            while the client is reconnecting).
        work_ms: Busy work per task.
        window: The most tasks in flight (submitted, not finished).
        batch: Tasks per submission.
        max_retries: The session's retries per task (kills hit a task repeatedly at times).
        timeout: Seconds for the whole run; unfinished tasks then count as lost.
        seed: Seeds the choices of the executors and nodes to kill.
        state_dir: The directory of the state and logs (with nodes, also of their work
            dirs), kept afterwards (default: a temporary one, removed).

    Raises:
        ValueError: ``node_kills`` without nodes, or more nodes than slots.
    """
    if node_kills and nodes < 2:
        raise ValueError("node kills need a cluster of at least 2 nodes")
    start = time.monotonic()
    report = Report(tasks)
    with tempfile.TemporaryDirectory(prefix="flame-chaos-") as temp:
        if nodes < 2:
            cluster: Daemon | Cluster = Daemon(state_dir or temp, slots)
            report.setup = f"daemon, {slots} slots"
        else:
            cluster = Cluster(state_dir or temp, slots, nodes)
            report.setup = f"head + {nodes} nodes, {slots} slots"
        try:
            cluster.launch()
            _Client(cluster, report, work_ms, max_retries).drive(
                deadline=start + timeout,
                kill_every=kill_every,
                restarts=restarts,
                node_kills=node_kills,
                replace_after=replace_after,
                quiet_restarts=quiet_restarts,
                window=window,
                batch=batch,
                seed=seed,
            )
        finally:
            orphans = cluster.orphans()  # before the head's stop would end them anyway
            report.exits = cluster.exits()
            codes = list(report.exits.values())
            report.daemon_exit = next((c for c in codes if c != 0), 0)
            report.leftovers = sorted(set(orphans) | set(cluster.leftovers()))
            report.log_tail = cluster.tail()
    report.elapsed = time.monotonic() - start
    return report


def _schedule(tasks: int, restarts: int, node_kills: int) -> list[tuple[int, str]]:
    """When (after how many tasks finished) to restart the session manager ("restart") and
    to kill a node ("node"): each kind spread evenly on its own decides the order, then all
    of them are spread evenly over the run (so that no two coincide)."""
    order = sorted(
        [((k + 1) / (restarts + 1), "restart") for k in range(restarts)]
        + [((k + 1) / (node_kills + 1), "node") for k in range(node_kills)]
    )
    return [(tasks * (i + 1) // (len(order) + 1), kind) for i, (_, kind) in enumerate(order)]


class _Client:
    """The client side of a run: submits, counts completions, crashes the session manager
    and kills nodes on cue."""

    def __init__(
        self, cluster: Daemon | Cluster, report: Report, work_ms: float, max_retries: int
    ) -> None:
        self.cluster = cluster
        self.report = report
        self.work_ms = work_ms
        self.max_retries = max_retries
        self.lock = threading.Condition()
        self.futures: list[flame.Future] = []  # appended by the driving thread only
        self.done = 0
        self.finished: collections.Counter[int] = collections.Counter()  # resolutions per id
        self.on_wire: collections.Counter[int] = collections.Counter()  # completions per id
        self.served_by: set[int] = set()  # executor pids that returned a result

    # -------------------------------------------------------------- callbacks

    def on_done(self, fut: flame.Future) -> None:
        pid = None
        if not fut.cancelled() and fut.exception() is None:
            pid = int(fut.result().split()[1])
        with self.lock:
            self.finished[fut.task_id] += 1
            self.done += 1
            if pid is not None:
                self.served_by.add(pid)
            self.lock.notify_all()

    def eligible(self) -> set[int]:
        with self.lock:
            return set(self.served_by)

    # -------------------------------------------------------------- driving

    def drive(
        self,
        *,
        deadline: float,
        kill_every: float,
        restarts: int,
        node_kills: int,
        replace_after: float,
        quiet_restarts: bool,
        window: int,
        batch: int,
        seed: int,
    ) -> None:
        n = self.report.tasks
        conn = flame.connect(self.cluster.address, client_name="chaos")
        # Count final completions as they come off the wire: the pump drops a duplicate
        # silently (a future resolves once), so count before it sees them.
        dispatch = conn._pump._dispatch

        def counting(items: list[Any]) -> None:
            with self.lock:
                self.on_wire.update(c[1] for c in items if c[2] >= SUCCEEDED)
            dispatch(items)

        conn._pump._dispatch = counting  # type: ignore[method-assign]
        killer = ExecutorKiller(self.cluster.port, kill_every, self.eligible, seed)
        rng = random.Random(seed + 1)
        events = _schedule(n, restarts, node_kills)
        replacement: tuple[float, int] | None = None  # (when, slots) of the next node to start
        settling = False  # after a quiet restart: submit nothing until all in flight is done

        def next_step() -> str | None:
            """What to do now: an event, "replace", "finish", "submit"; None: wait."""
            submitted = len(self.futures)
            if events and self.done >= events[0][0]:
                return events[0][1]
            if replacement is not None and time.monotonic() >= replacement[0]:
                return "replace"
            if submitted == n and self.done >= n:
                return "finish" if replacement is None else None
            if (
                submitted < n
                and submitted - self.done + batch <= window
                and not (settling and self.done < submitted)
            ):
                return "submit"
            return None

        try:
            conn.register_application("chaos-square", Square)
            session = conn.create_session(
                "chaos-square", str(self.work_ms).encode(), 0, max_retries=self.max_retries
            )
            if kill_every > 0:
                killer.start()
            while True:
                wake = deadline if replacement is None else min(deadline, replacement[0])
                with self.lock:
                    self.lock.wait_for(
                        lambda: next_step() is not None,
                        timeout=max(0.0, wake - time.monotonic()),
                    )
                    step = next_step()
                if step == "restart":
                    events.pop(0)
                    self.cluster.crash()
                    if quiet_restarts:
                        settling = True
                    else:
                        self.report.down_batches.append(len(self.futures))
                        self.submit(session, batch)  # sent while the daemon is down
                    self.cluster.start()
                    self.report.daemon_restarts += 1
                elif step == "node":
                    events.pop(0)
                    assert isinstance(self.cluster, Cluster)
                    if replacement is not None:  # never leave the cluster without nodes
                        self.cluster.add_node(replacement[1])
                    _, slots = self.cluster.kill_node(rng)
                    self.report.node_kills += 1
                    replacement = (time.monotonic() + replace_after, slots)
                elif step == "replace":
                    assert isinstance(self.cluster, Cluster) and replacement is not None
                    self.cluster.add_node(replacement[1])
                    replacement = None
                elif step == "finish":
                    break
                elif time.monotonic() > deadline:
                    i = session.info()
                    self.report.stuck_session = (
                        f"session {i.id}: pending {i.pending}, running {i.running}, "
                        f"succeeded {i.succeeded}, failed {i.failed}, cancelled {i.cancelled}; "
                        f"client: {len(self.futures)} submitted, {self.done} done"
                    )
                    break
                elif step == "submit":
                    settling = False
                    self.submit(session, batch)
        finally:
            if killer.is_alive():
                killer.stop()
            self.report.executor_kills = killer.kills
            conn.close()  # unresolved futures fail with ConnectionError: counted as lost
        self.check()

    def submit(self, session: flame.Session, batch: int) -> None:
        first = len(self.futures)
        k = min(batch, self.report.tasks - first)
        if k <= 0:
            return
        new = session.run_tasks(str(x).encode() for x in range(first, first + k))
        self.futures.extend(new)
        for f in new:
            f.add_done_callback(self.on_done)

    def check(self) -> None:
        r = self.report
        for x, fut in enumerate(self.futures):
            exc = flame.CancelledError() if fut.cancelled() else fut.exception()
            if isinstance(exc, flame.ConnectionError):
                r.lost += 1
                r.lost_inputs.append(x)
            elif exc is not None:
                r.failed[type(exc).__name__] += 1
            elif int(fut.result().split()[0]) == x * x:
                r.correct += 1
            else:
                r.wrong.append(x)
            r.retries += max(0, fut.attempts - 1)
        r.lost += r.tasks - len(self.futures)  # never submitted before the deadline
        with self.lock:
            r.duplicated = sum(c - 1 for c in self.finished.values() if c > 1)
            r.duplicated += sum(c - 1 for c in self.on_wire.values() if c > 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--kill-every", type=float, default=0.2, help="s between executor kills")
    p.add_argument(
        "--restarts", type=int, default=1, help="session manager (daemon or head) restarts"
    )
    p.add_argument(
        "--nodes", type=int, default=1, help="1: flame-daemon start; more: a head and nodes"
    )
    p.add_argument("--node-kills", type=int, default=0, help="nodes SIGKILLed and replaced")
    p.add_argument(
        "--replace-after", type=float, default=0.5, help="s from a node kill to its replacement"
    )
    p.add_argument(
        "--quiet-restarts",
        action="store_true",
        help="submit nothing around a daemon restart until the tasks in flight are done",
    )
    p.add_argument("--work-ms", type=float, default=2.0, help="busy work per task")
    p.add_argument("--window", type=int, default=500, help="most tasks in flight")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-dir", help="keep the state and logs here")
    a = p.parse_args()
    if a.node_kills and a.nodes < 2:
        p.error("--node-kills needs --nodes 2 or more")
    if a.nodes > a.slots:
        p.error("--nodes may not exceed --slots (every node needs a slot)")
    report = run(
        a.tasks,
        slots=a.slots,
        kill_every=a.kill_every,
        restarts=a.restarts,
        nodes=a.nodes,
        node_kills=a.node_kills,
        replace_after=a.replace_after,
        quiet_restarts=a.quiet_restarts,
        work_ms=a.work_ms,
        window=a.window,
        timeout=a.timeout,
        seed=a.seed,
        state_dir=a.state_dir,
    )
    print(report.summary())
    if not report.ok:
        print(f"FAILED; wrong inputs: {report.wrong[:20]}; leftovers: {report.leftovers}")
        print(f"exit codes: {report.exits}")
        lost = report.lost_inputs
        print(
            f"lost inputs: {lost[:5]}..{lost[-5:]}; batches sent while the daemon was down "
            f"start at {report.down_batches}"
        )
        print(f"daemon's view: {report.stuck_session}")
        print(f"logs (tail):\n{report.log_tail}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
