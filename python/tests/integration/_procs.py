"""Processes in integration tests: running ``flame-daemon`` commands, and finding processes
through /proc to check that nothing is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_command() -> list[str]:
    """How to run *this* environment's ``flame-daemon``: the script beside the interpreter,
    never whatever ``PATH`` finds first (another checkout's, a pyenv shim)."""
    exe = Path(sys.executable).with_name("flame-daemon")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import flame.cli as c; c.daemon_main()"]


def start_daemon(*args: str, port: int | None = None) -> subprocess.Popen[str]:
    """Run ``flame-daemon ARGS`` in its own session; with ``port``, wait until it listens."""
    command = daemon_command()
    proc = subprocess.Popen(
        [*command, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while port is not None:
        if proc.poll() is not None:
            raise AssertionError(f"flame-daemon {args[0]} exited: {proc.stderr.read()}")  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                stop_daemon(proc)
                raise AssertionError(f"flame-daemon {args[0]} did not listen on {port}") from None
            time.sleep(0.1)
    return proc


def join_token(address: str, state_dir: str | Path) -> str:
    """A join token for the head at ``address`` whose state is in ``state_dir``, made as its
    admin would (``flame-daemon token create --node``, with the head's ``admin.token``)."""
    args = ["token", "create", "--node", "--head", address, "--state-dir", str(state_dir)]
    out = subprocess.run(
        [*daemon_command(), *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return out.split("--join-token", 1)[1].split()[0]


def join_args(address: str, state_dir: str | Path, node_dir: str | Path) -> list[str]:
    """What a ``flame-daemon node`` needs to join that head: a join token, and a state dir
    of its own for the credentials it gets (never the user's ``~/.flame/node``)."""
    return ["--join-token", join_token(address, state_dir), "--state-dir", str(node_dir)]


def stop_daemon(proc: subprocess.Popen[str]) -> None:
    """SIGTERM; it must exit 0 and leave no process of its session behind."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"{proc.args} exited with {proc.returncode}"
    left = wait_until_gone(lambda: session_members(proc.pid))
    assert not left, f"{proc.args} left processes behind: {left}"


def start_client(script: str, port: int) -> subprocess.Popen[str]:
    """A Python client process running ``script`` against the daemon on ``port``, with pipes
    on stdin and stdout for the test to steer it line by line."""
    env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
    env["FLAME_ADDRESS"] = f"127.0.0.1:{port}"
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
