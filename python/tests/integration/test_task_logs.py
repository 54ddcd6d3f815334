"""What tasks print: echoed in the client with the task's id, kept by the daemon
(``Future.log()``, ``GetTaskLog``), kept for failed tasks, bounded, and silenced on request."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import flame
from flame import api, errors
from flame._capture import MAX_LOG_CHARS


@flame.service
def chatty(x: int) -> int:
    print(f"hello {x}")
    print("a warning", file=sys.stderr)
    return x * 10


@flame.service
def chatty_then_fails(x: int) -> int:
    print(f"about to fail on {x}")
    raise ValueError(f"bad {x}")


@flame.service
def silent(x: int) -> int:
    return x


@flame.service
def flood(lines: int) -> int:
    for i in range(lines):
        print(f"line {i:07d} " + "x" * 50)
    return lines


def test_printed_lines_are_echoed_with_the_task_id_and_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fut = chatty(4)
    assert fut.result(60) == 40
    prefix = f"(task {fut.session_id}/{fut.task_id}) "
    # The echo is written before the future resolves, so it is there already.
    err = capsys.readouterr().err
    assert f"{prefix}hello 4\n{prefix}a warning\n" in err
    assert fut.log() == "hello 4\na warning\n"


def test_a_failed_tasks_output_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    fut = chatty_then_fails(2)
    with pytest.raises(ValueError, match="bad 2"):
        fut.result(60)
    assert f"(task {fut.session_id}/{fut.task_id}) about to fail on 2" in capsys.readouterr().err
    assert fut.log() == "about to fail on 2\n"


def test_a_silent_task_has_an_empty_log_and_no_echo(capsys: pytest.CaptureFixture[str]) -> None:
    futs = silent.map(range(50))
    assert flame.get(futs, timeout=60) == list(range(50))
    assert "(task " not in capsys.readouterr().err
    assert futs[0].log() == ""


def test_huge_output_is_truncated_to_its_tail_with_a_marker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = 60_000  # 63 characters each: about 3.8 Mi characters
    fut = flood(lines)
    assert fut.result(120) == lines
    log = fut.log()
    marker, tail = log.split("\n", 1)
    assert marker.startswith("[flame: ") and "earlier characters" in marker, marker
    assert len(tail) == MAX_LOG_CHARS
    assert tail.endswith(f"line {lines - 1:07d} " + "x" * 50 + "\n")
    assert "[flame: " in capsys.readouterr().err  # the echo is the bounded log too


def test_an_unknown_task_is_named_in_the_error() -> None:
    fut = silent(1)
    fut.result(60)
    conn = api.runtime().conn
    with pytest.raises(errors.FlameError, match="has no task"):
        conn.task_log(fut.session_id, fut.task_id + 1_000_000)


SCRIPT = textwrap.dedent(
    """
    import sys
    import flame

    flame.init(slots=1, log_to_client=sys.argv[1] == "on")

    @flame.service
    def greet(name):
        print(f"hi {name}")
        return name

    fut = greet("there")
    assert fut.result(60) == "there"
    assert fut.log() == "hi there\\n", fut.log()
    print(f"task {fut.session_id}/{fut.task_id}")
    flame.shutdown()
    """
)


@pytest.mark.parametrize("echo", ["on", "off"])
def test_log_to_client_switches_the_echo(echo: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, echo],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    task = proc.stdout.split()[-1]
    echoed = f"(task {task}) hi there\n" in proc.stderr
    assert echoed == (echo == "on"), proc.stderr
