"""Chaos: thousands of short tasks while executors are SIGKILLed and the daemon itself is
killed and restarted. Nothing may be lost, wrong, or delivered twice.

    python benchmarks/chaos.py [--tasks 10000] [--slots 2] [--kill-every 0.2] [--restarts 1]

Runs ``flame-daemon start`` as a separate process on a free port with its own state
directory. A client (``flame.connect``) keeps a window of tasks in flight; each task works
a few ms and returns its input squared (and its executor's pid). A thread SIGKILLs a
random executor of that daemon every ``--kill-every`` seconds (only executors that have
already returned a result, so that start-up is not what gets killed), and ``--restarts``
times, spread over the run, the daemon process is SIGKILLed and started again on the same
port and state directory: the client must reconnect by itself.

Prints a summary; exits 1 if a task was lost, failed, wrong or delivered twice, or a
process was left behind. ``python/tests/integration/test_chaos.py`` runs a short version
of the same scenario in CI (it imports this file). Linux only (executors are found
through /proc).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import flame
from flame.futures import SUCCEEDED

__all__ = ["Daemon", "ExecutorKiller", "Report", "Square", "run"]


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
    """Live executor processes started for the daemon listening on ``port``."""
    return [
        pid
        for pid, _, cmd in _proc_table()
        if "flame._executor" in cmd and f"127.0.0.1:{port} " in f"{cmd} "
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """``flame-daemon start`` in its own process session, which can crash and come back.

    Its output goes to ``daemon.log`` in the state directory (a pipe nobody reads would
    block it once full).
    """

    def __init__(self, state_dir: str, slots: int, port: int | None = None) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.slots = slots
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = Path(state_dir, "daemon.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.sessions: list[int] = []  # every run's process session (= its pid)

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it listens.

        Raises:
            RuntimeError: it exited or did not listen within ``timeout`` seconds.
        """
        exe = shutil.which("flame-daemon")
        command = [exe] if exe else [sys.executable, "-c", "import flame.cli as c; c.daemon_main()"]
        args = ["start", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--slots", str(self.slots), "--state-dir", self.state_dir]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*command, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.sessions.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
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
        """SIGKILL the daemon process (only it: its executors must notice by themselves)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; its exit code (``None`` if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def leftovers(self, timeout: float = 15.0) -> list[tuple[int, str]]:
        """Processes of any of its runs still alive after ``timeout`` s (should be none)."""
        deadline = time.monotonic() + timeout
        while True:
            left = [(p, c) for p, sid, c in _proc_table() if sid in self.sessions]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


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
    correct: int = 0
    wrong: list[int] = field(default_factory=list)  # inputs whose result was not x*x
    failed: collections.Counter[str] = field(default_factory=collections.Counter)  # by type
    lost: int = 0  # futures unresolved at the end (or never submitted)
    lost_inputs: list[int] = field(default_factory=list)
    duplicated: int = 0  # extra completions (on the wire or resolving a future)
    down_batches: list[int] = field(default_factory=list)  # first input of each batch
    # submitted while the daemon was down
    executor_kills: int = 0
    retries: int = 0  # sum of attempts - 1
    daemon_restarts: int = 0
    daemon_exit: int | None = None  # exit code of the final graceful stop
    leftovers: list[tuple[int, str]] = field(default_factory=list)
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
        return (
            f"tasks {self.tasks}, correct {self.correct}, wrong {len(self.wrong)}, "
            f"failed {failed}, lost {self.lost}, "
            f"duplicated {self.duplicated}; executor kills {self.executor_kills}, "
            f"retries {self.retries}, daemon restarts {self.daemon_restarts}; "
            f"daemon exit {self.daemon_exit}, leftovers {len(self.leftovers)}; "
            f"elapsed {self.elapsed:.1f} s ({self.tasks / max(self.elapsed, 1e-9):,.0f} tasks/s)"
        )


def run(
    tasks: int = 10_000,
    *,
    slots: int = 2,
    kill_every: float = 0.2,
    restarts: int = 1,
    quiet_restarts: bool = False,
    work_ms: float = 2.0,
    window: int = 500,
    batch: int = 100,
    max_retries: int = 50,
    timeout: float = 600.0,
    seed: int = 0,
    state_dir: str | None = None,
) -> Report:
    """Run the scenario against a fresh daemon (stopped at the end) and report.

    Args:
        tasks: How many tasks to run.
        slots: The daemon's executor slots.
        kill_every: Seconds between executor kills (0: no kills).
        restarts: How many times to crash and restart the daemon, evenly spread.
        quiet_restarts: Submit nothing from a crash until every task in flight then has
            finished (by default submissions go on: some while the daemon is down, some
            while the client is reconnecting).
        work_ms: Busy work per task.
        window: The most tasks in flight (submitted, not finished).
        batch: Tasks per submission.
        max_retries: The session's retries per task (kills hit a task repeatedly at times).
        timeout: Seconds for the whole run; unfinished tasks then count as lost.
        seed: Seeds the killer's choices.
        state_dir: The daemon's state directory, kept afterwards (default: a temporary
            one, removed).
    """
    start = time.monotonic()
    report = Report(tasks)
    with tempfile.TemporaryDirectory(prefix="flame-chaos-") as temp:
        daemon = Daemon(state_dir or temp, slots)
        daemon.start()
        try:
            _Client(daemon, report, work_ms, max_retries).drive(
                deadline=start + timeout,
                kill_every=kill_every,
                restarts=restarts,
                quiet_restarts=quiet_restarts,
                window=window,
                batch=batch,
                seed=seed,
            )
        finally:
            report.daemon_exit = daemon.stop()
            report.leftovers = daemon.leftovers()
            report.log_tail = daemon.tail()
    report.elapsed = time.monotonic() - start
    return report


class _Client:
    """The client side of a run: submits, counts completions, crashes the daemon on cue."""

    def __init__(self, daemon: Daemon, report: Report, work_ms: float, max_retries: int):
        self.daemon = daemon
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
        quiet_restarts: bool,
        window: int,
        batch: int,
        seed: int,
    ) -> None:
        n = self.report.tasks
        conn = flame.connect(self.daemon.address, client_name="chaos")
        # Count final completions as they come off the wire: the pump drops a duplicate
        # silently (a future resolves once), so count before it sees them.
        dispatch = conn._pump._dispatch

        def counting(items: list[Any]) -> None:
            with self.lock:
                self.on_wire.update(c[1] for c in items if c[2] >= SUCCEEDED)
            dispatch(items)

        conn._pump._dispatch = counting  # type: ignore[method-assign]
        killer = ExecutorKiller(self.daemon.port, kill_every, self.eligible, seed)
        crash_at = [n * (k + 1) // (restarts + 1) for k in range(restarts)]
        settling = False  # after a quiet restart: submit nothing until all in flight is done

        def ready() -> tuple[bool, bool, bool]:  # (crash now, room to submit, all done)
            submitted = len(self.futures)
            return (
                bool(crash_at) and self.done >= crash_at[0],
                submitted < n
                and submitted - self.done + batch <= window
                and not (settling and self.done < submitted),
                submitted == n and self.done >= n,
            )

        try:
            conn.register_application("chaos-square", Square)
            session = conn.create_session(
                "chaos-square", str(self.work_ms).encode(), 0, max_retries=self.max_retries
            )
            if kill_every > 0:
                killer.start()
            while True:
                with self.lock:
                    self.lock.wait_for(
                        lambda: any(ready()), timeout=max(0.0, deadline - time.monotonic())
                    )
                    crash, room, all_done = ready()
                if crash:
                    crash_at.pop(0)
                    self.daemon.crash()
                    if quiet_restarts:
                        settling = True
                    else:
                        self.report.down_batches.append(len(self.futures))
                        self.submit(session, batch)  # sent while the daemon is down
                    self.daemon.start()
                    self.report.daemon_restarts += 1
                elif all_done:
                    break
                elif time.monotonic() > deadline:
                    i = session.info()
                    self.report.stuck_session = (
                        f"session {i.id}: pending {i.pending}, running {i.running}, "
                        f"succeeded {i.succeeded}, failed {i.failed}, cancelled {i.cancelled}; "
                        f"client: {len(self.futures)} submitted, {self.done} done"
                    )
                    break
                elif room:
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
    p.add_argument("--restarts", type=int, default=1, help="daemon crashes and restarts")
    p.add_argument(
        "--quiet-restarts",
        action="store_true",
        help="submit nothing around a daemon restart until the tasks in flight are done",
    )
    p.add_argument("--work-ms", type=float, default=2.0, help="busy work per task")
    p.add_argument("--window", type=int, default=500, help="most tasks in flight")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-dir", help="keep the daemon's state and log here")
    a = p.parse_args()
    report = run(
        a.tasks,
        slots=a.slots,
        kill_every=a.kill_every,
        restarts=a.restarts,
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
        lost = report.lost_inputs
        print(
            f"lost inputs: {lost[:5]}..{lost[-5:]}; batches sent while the daemon was down "
            f"start at {report.down_batches}"
        )
        print(f"daemon's view: {report.stuck_session}")
        print(f"daemon log (tail):\n{report.log_tail}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
