"""The low-level API: connections, registered applications, raw-bytes tasks, failures."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

import flame
from flame import FlameService, SessionContext, TaskContext


class Echo(FlameService):
    def on_session_enter(self, ctx: SessionContext) -> None:
        self.prefix = ctx.common_data
        self.session_id = ctx.session_id

    def on_task_invoke(self, ctx: TaskContext) -> bytes:
        if ctx.input == b"fail":
            raise RuntimeError("asked to fail")
        assert ctx.session_id == self.session_id
        return self.prefix + ctx.input


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_register_and_run(cluster: str) -> None:
    with flame.connect(cluster) as conn:
        conn.register_application("echo", Echo, description="echoes its input")
        assert ("echo", "echoes its input") in conn.list_applications()
        with conn.create_session("echo", common_data=b"> ", slots=2) as session:
            assert isinstance(session.id, int) and session.application == "echo"
            seen: list[bytes] = []
            called = threading.Event()

            def on_done(fut: flame.Future) -> None:
                seen.append(fut.result())
                called.set()

            fut = session.run_task(b"hi", callback=on_done)
            assert fut.result(timeout=60) == b"> hi"
            assert called.wait(10) and seen == [b"> hi"]
            batch = session.run_tasks(b"%d" % i for i in range(100))
            assert [f.result(timeout=60) for f in batch] == [b"> %d" % i for i in range(100)]
            with pytest.raises(RuntimeError, match="asked to fail"):
                session.run_task(b"fail").result(timeout=60)
            assert session.id in [info.id for info in conn.list_sessions()]
        assert session.info().state == "closed"
        session.close()  # idempotent


def test_register_application_on_the_current_cluster(cluster: str) -> None:
    flame.register_application("echo-top", Echo)
    with flame.connect(cluster) as conn:
        with conn.create_session("echo-top", common_data=b"top:") as session:
            assert session.run_task(b"x").result(timeout=60) == b"top:x"


_BESIDE_A_CONNECTION = """
import sys
import flame
from flame import api

class Echo(flame.FlameService):
    def on_task_invoke(self, ctx):
        return ctx.input

conn = flame.connect(sys.argv[1])
for call in (lambda: flame.register_application("beside", Echo), lambda: flame.put(1)):
    try:
        call()
    except flame.FlameError as e:
        print("refused:", e)
assert api._runtime is None, "an embedded cluster was started"
conn.register_application("beside", Echo)
with conn.create_session("beside") as session:
    print("ran:", session.run_task(b"x").result(timeout=60))
conn.close()
"""


def test_module_level_calls_beside_an_explicit_connection_start_no_cluster(
    cluster: str,
) -> None:
    # flame.register_application after flame.connect once started an embedded cluster and
    # registered there, so conn.create_session then said "not registered".
    env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-c", _BESIDE_A_CONNECTION, cluster],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    refusals = [line for line in run.stdout.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 2, run.stdout
    assert "flame.register_application() uses the cluster of flame.init()" in refusals[0]
    assert f"flame.connect({cluster!r})" in refusals[0]
    assert "conn.register_application(...)" in refusals[0]
    assert refusals[1].startswith("refused: flame.put()")
    assert "ran: b'x'" in run.stdout


def test_closed_session_rejects_tasks(cluster: str) -> None:
    with flame.connect(cluster) as conn:
        conn.register_application("echo-closed", Echo)
        session = conn.create_session("echo-closed")
        session.close()
        with pytest.raises(flame.SessionError):
            session.run_task(b"late").result(timeout=60)


def test_unknown_session(cluster: str) -> None:
    with flame.connect(cluster) as conn:
        with pytest.raises(flame.SessionError):
            conn.get_session(2**40 + 12345)
        with pytest.raises(flame.SessionError):
            conn.submit(2**40 + 12345, [b"x"])[0].result(timeout=60)


def test_unknown_application(cluster: str) -> None:
    with flame.connect(cluster) as conn:
        with pytest.raises(flame.InvalidArgumentError, match="no-such-app"):
            conn.create_session("no-such-app")


def test_register_rejects_non_services(cluster: str) -> None:
    with flame.connect(cluster) as conn:
        with pytest.raises(flame.InvalidArgumentError, match="FlameService subclass"):
            conn.register_application("bad", object)  # type: ignore[arg-type]


def test_missing_module_on_executor(cluster: str) -> None:
    # A spec that refers to a module only the client has: the executor cannot load it.
    module = types.ModuleType("flame_client_only_module")

    class ClientOnly(FlameService):
        pass

    ClientOnly.__module__ = module.__name__
    ClientOnly.__qualname__ = "ClientOnly"
    module.ClientOnly = ClientOnly  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        spec = pickle.dumps({"kind": "service", "cls": ClientOnly})
    finally:
        del sys.modules[module.__name__]
    with flame.connect(cluster) as conn:
        with conn.create_session("client-only", app_spec=spec) as session:
            with pytest.raises(flame.SessionEnterError) as info:
                session.run_task(b"x").result(timeout=60)
    assert "No module named 'flame_client_only_module'" in str(info.value)


def test_unreachable_daemon_names_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(flame.ConnectionError, match=address):
        flame.connect(address, timeout=2.0)
    assert time.monotonic() - start < 5.0


class Sleeper(FlameService):
    def on_task_invoke(self, ctx: TaskContext) -> bytes:
        time.sleep(float(ctx.input))
        return b"done"


def test_closing_the_connection_fails_pending_futures(cluster: str) -> None:
    with flame.connect(cluster) as admin:
        admin.register_application("sleeper", Sleeper)
        conn = flame.connect(cluster)
        session = conn.create_session("sleeper")
        fut = session.run_task(b"2")
        conn.close()
        with pytest.raises(flame.ConnectionError, match="before task"):
            fut.result(timeout=30)
        with pytest.raises(flame.ConnectionError, match="closed"):
            session.run_task(b"1")
        admin.close_session(session.id)
