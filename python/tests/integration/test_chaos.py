"""Chaos against a separate ``flame-daemon`` process: executors SIGKILLed every 200 ms while
thousands of tasks run, and the daemon itself SIGKILLed and restarted on the same port and
state directory. Every task must end exactly once with the right result.

The scenario lives in ``benchmarks/chaos.py`` (run by hand at a larger scale); this runs a
short version of it and checks the report.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

import flame

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds executors in /proc")


def _load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flame_chaos", BENCHMARKS / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling by value look it up
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()


def test_chaos_executor_kills_and_a_daemon_restart() -> None:
    # Submissions go on through the restart: the client resubmits what the daemon never
    # stored, whatever it submitted meanwhile.
    report = chaos.run(2_000, slots=2, kill_every=0.2, restarts=1, timeout=45)
    print(report.summary())
    assert report.lost == 0, (report.lost_inputs[:10], report.stuck_session, report.log_tail)
    assert report.duplicated == 0
    assert not report.wrong and not report.failed, (report.wrong[:10], report.failed)
    assert report.correct == 2_000
    assert report.executor_kills > 0 and report.daemon_restarts == 1
    assert report.daemon_exit == 0, report.log_tail
    assert not report.leftovers, report.leftovers


def test_task_sent_into_a_dying_connection_survives_a_newer_submission(tmp_path: Path) -> None:
    daemon = chaos.Daemon(str(tmp_path), slots=1)
    daemon.start()
    try:
        with flame.connect(daemon.address) as conn:
            conn.register_application("square", chaos.Square)
            session = conn.create_session("square", b"0", 0)
            assert session.run_task(b"2").result(timeout=30).split()[0] == b"4"
            # Freeze the daemon so that `lost` is written into the connection, then kill it:
            # `lost` is never stored, and the daemon answers a Watch for it with "unknown".
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGSTOP)
            lost = session.run_task(b"3")
            time.sleep(0.1)
            daemon.crash()
            time.sleep(1.0)  # the client backs off between reconnection attempts
            daemon.start()
            newer = session.run_task(b"4")  # queued: reaches the daemon before the resubmit
            assert newer.result(timeout=30).split()[0] == b"16"
            assert lost.result(timeout=3).split()[0] == b"9"
    finally:
        assert daemon.stop() == 0, daemon.tail()
        assert not daemon.leftovers()
