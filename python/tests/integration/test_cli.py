"""The ``flame`` CLI, run as a subprocess against the test session's real daemon: status,
lists, views, cancel, close, ``--json``, 100-column tables, and the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from _procs import free_port

import flame
from flame import api


def flame_cli(address: str | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flame.cli", *args]
    if address is not None:
        command += ["--address", address]
    # The embedded cluster's token exists only in this process: hand it to the CLI.
    env = dict(os.environ, FLAME_TOKEN=api.runtime().token or "")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@flame.service(max_retries=0)
def triple(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return 3 * x


@flame.service
def shout(x: int) -> int:
    print(f"hello {x}")
    return x


def test_logs_show_what_a_task_printed(cluster: str) -> None:
    fut = shout(7)
    assert fut.result(timeout=60) == 7
    ref = f"{fut.session_id}/{fut.task_id}"
    r = flame_cli(cluster, "logs", ref)
    assert r.returncode == 0 and r.stdout.strip() == "hello 7", (r.stdout, r.stderr)
    r = flame_cli(cluster, "logs", ref, "--json")
    assert json.loads(r.stdout)["log"].strip() == "hello 7"


@pytest.fixture(scope="module")
def finished(cluster: str) -> tuple[int, list[flame.Future]]:
    """A session with 4 succeeded tasks and 1 failed one."""
    futs = [triple(x) for x in range(5)]
    flame.wait(futs, num_returns=5, timeout=60)
    return futs[0].session_id, futs


def test_status_and_session_list(cluster: str, finished: tuple[int, list]) -> None:
    sid, _ = finished
    r = flame_cli(cluster, "status")
    assert r.returncode == 0, r.stderr
    assert "executors" in r.stdout and str(sid) in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 100

    r = flame_cli(cluster, "list", "sessions", "--json")
    assert r.returncode == 0, r.stderr
    mine = next(s for s in json.loads(r.stdout) if s["id"] == sid)
    assert (mine["succeeded"], mine["failed"], mine["state"]) == (4, 1, "open")

    r = flame_cli(cluster, "--json", "status")  # --json before the command works too
    assert json.loads(r.stdout)["sessions_open"] >= 1

    r = flame_cli(cluster, "list", "executors", "--json")
    executors = json.loads(r.stdout)
    assert executors and all(e["node_id"] and e["state"] for e in executors), executors
    r = flame_cli(cluster, "list", "nodes")
    assert r.returncode == 0 and "local" in r.stdout and "alive" in r.stdout
    r = flame_cli(cluster, "list", "apps", "--json")
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)


def test_tasks_list_and_failed_task_view(cluster: str, finished: tuple[int, list]) -> None:
    sid, futs = finished
    r = flame_cli(cluster, "list", "tasks", "--session", str(sid), "--state", "failed", "--json")
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["total"] == 1
    failed = page["tasks"][0]
    assert failed["task_id"] == futs[3].task_id
    assert "three is not allowed" in failed["error"]["message"]

    r = flame_cli(cluster, "list", "tasks", "--session", str(sid))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["TASK", "STATE"]
    assert "(5 of 5 tasks)" in lines[-1]
    assert all(len(line) <= 100 for line in lines), lines

    r = flame_cli(cluster, "view", "task", f"{sid}/{futs[3].task_id}")
    assert r.returncode == 0, r.stderr
    assert "failed" in r.stdout and "user_exception" in r.stdout
    assert "Traceback" in r.stdout and "ValueError: three is not allowed" in r.stdout

    r = flame_cli(cluster, "view", "task", f"{sid}/{futs[0].task_id}", "--json")
    ok = json.loads(r.stdout)
    assert ok["state"] == "succeeded" and ok["error"] is None
    assert ok["created_ms"] <= ok["started_ms"] <= ok["finished_ms"]
    assert ok["executor_id"] and ok["node_id"]

    r = flame_cli(cluster, "view", "session", str(sid))
    assert r.returncode == 0, r.stderr
    assert "5/5" in r.stdout and "triple" in r.stdout


@flame.service(max_retries=0)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_cancel_a_running_task_and_close_a_session(cluster: str) -> None:
    fut = nap(60)
    deadline = time.monotonic() + 30
    ref = None
    while time.monotonic() < deadline:
        if fut.task_id is not None:
            ref = f"{fut.session_id}/{fut.task_id}"
            r = flame_cli(cluster, "view", "task", ref, "--json")
            if r.returncode == 0 and json.loads(r.stdout)["state"] == "running":
                break
        time.sleep(0.2)
    else:
        pytest.fail("the task never started")
    r = flame_cli(cluster, "cancel", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("cancelled")
    with pytest.raises(flame.CancelledError):
        fut.result(timeout=30)
    r = flame_cli(cluster, "cancel", ref)
    assert r.returncode == 1
    assert "already finished" in r.stderr

    r = flame_cli(cluster, "close", str(fut.session_id), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "closed"


def test_objects_list(cluster: str) -> None:
    # What the directory knows of objects on nodes (#12), as a page with a total.
    r = flame_cli(cluster, "list", "objects", "--json")
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["total"] == len(page["objects"]) or page["total"] > 100, page
    r = flame_cli(cluster, "list", "objects", "--node", "1", "--limit", "5")
    assert r.returncode == 0 and "objects)" in r.stdout, (r.stdout, r.stderr)
    usages = [
        (["list", "objects", "--limit", "5000"], "--limit"),
        (["list", "objects", "--node", "0"], "--node"),
        (["list", "objects", "--session", "1"], "do not apply"),
        (["list", "sessions", "--node", "1"], "does not apply"),
    ]
    for usage, says in usages:
        r = flame_cli(cluster, *usage)
        assert r.returncode == 2 and says in r.stderr, (usage, r.stderr)


def test_exit_codes_and_messages(cluster: str, finished: tuple[int, list]) -> None:
    sid, _ = finished
    r = flame_cli(cluster, "view", "task", f"{sid}/999")
    assert r.returncode == 1 and "no task 999" in r.stderr
    r = flame_cli(cluster, "view", "session", "987654")
    assert r.returncode == 1 and "987654" in r.stderr
    r = flame_cli(cluster, "list", "tasks", "--session", str(sid), "--state", "sleepy")
    assert r.returncode == 1 and "unknown task state 'sleepy'" in r.stderr

    usages = [
        (["view", "task", "12"], "SESSION/TASK"),
        (["list", "tasks"], "--session"),
        (["frobnicate"], "invalid choice"),
        (["cancel", "a/b"], "'a/b'"),
        (["close", "0"], "positive integer"),
        (["list", "tasks", "--session", "1", "--limit", "0"], "--limit"),
        (["list", "tasks", "--session", "1", "--offset", "-1"], "--offset"),
        (["list", "sessions", "--state", "running"], "open, closed"),
        (["list", "executors", "--state", "busy"], "bound"),
        (["list", "nodes", "--state", "alive"], "does not apply"),
        (["list", "sessions", "--session", "1"], "does not apply"),
    ]
    for usage, says in usages:
        r = flame_cli(cluster, *usage)
        assert r.returncode == 2, (usage, r.stderr)
        assert says in r.stderr, (usage, r.stderr)
    r = flame_cli(cluster, "logs", f"{sid}/1")
    assert r.returncode == 1 and "no task" in r.stderr, r.stderr

    nobody = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    r = flame_cli(nobody, "status")
    assert r.returncode == 3
    assert nobody.split("//")[1] in r.stderr, r.stderr
    assert time.monotonic() - started < 30
