"""Per-user authorization through the ``flame`` command line (#11): on a ``flame-daemon start``
with two users made by its admin (``flame-daemon token create --user``), bob's CLI neither
lists, views, cancels nor reads the logs of alice's session and task (exit 1, the message
naming whose they are), while alice's and the admin's do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _procs import daemon_command, free_port, start_daemon, stop_daemon

import flame


def make_user(address: str, state: Path, name: str) -> str:
    args = ["token", "create", "--user", name, "--head", address, "--state-dir", str(state)]
    out = subprocess.run(
        [*daemon_command(), *args], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.split()[-1]


def flame_cli(home: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAME_")}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "flame.cli", *args, "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


class Echo(flame.FlameService):
    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        import time

        print("alice's secret output")
        if ctx.input == b"slow":
            time.sleep(60)
        return ctx.input


def test_the_cli_shows_a_user_only_its_own_sessions(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    address = f"http://127.0.0.1:{port}"
    daemon = start_daemon(
        "start", "--port", str(port), "--state-dir", str(state), "--slots", "1", "--no-http",
        "--python", sys.executable, port=port,
    )  # fmt: skip
    try:
        alice, bob = make_user(address, state, "alice"), make_user(address, state, "bob")
        admin = (state / "admin.token").read_text().strip()
        with flame.connect(address, token=alice) as conn:
            conn.register_application("echo", Echo)
            session = conn.create_session("echo")
            done = session.run_tasks([b"hi"])[0]
            assert done.result(timeout=60) == b"hi"
            queued = conn.create_session("echo").run_tasks([b"slow"])  # runs a minute
            task = f"{session.id}/{done.task_id}"

            def ids(token: str) -> set[int]:
                out = flame_cli(tmp_path, token, "list", "sessions", "--json", "--address", address)
                assert out.returncode == 0, out.stderr
                return {s["id"] for s in json.loads(out.stdout)}

            assert session.id in ids(alice) and session.id in ids(admin)
            assert session.id not in ids(bob), "bob lists alice's session"
            for args in (
                ["view", "session", str(session.id)],
                ["view", "task", task],
                ["logs", task],
                ["cancel", f"{queued[0].session_id}/{queued[0].task_id}"],
            ):
                refused = flame_cli(tmp_path, bob, *args, "--address", address)
                assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
                assert "belongs to user alice" in refused.stderr, (args, refused.stderr)
                assert "secret" not in refused.stdout
            own = flame_cli(tmp_path, alice, "logs", task, "--address", address)
            assert own.returncode == 0 and "alice's secret output" in own.stdout, own.stderr
            assert not queued[0].done(), "bob's cancel reached alice's task"
            slow = f"{queued[0].session_id}/{queued[0].task_id}"
            cancel = flame_cli(tmp_path, alice, "cancel", slow, "--address", address)
            assert cancel.returncode == 0, cancel.stderr
            session.close()
    finally:
        stop_daemon(daemon)
