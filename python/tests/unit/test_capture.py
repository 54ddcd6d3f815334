"""Per-task output capture in the executor: the proxies, the bound, and the Worker's pair."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import cloudpickle
import pytest

from flame import _serde, errors
from flame._capture import OutputCapture, _Proxy
from flame._worker import Worker


@pytest.fixture
def capture() -> Iterator[OutputCapture]:
    # Installed in the test's own phase: pytest swaps sys.stdout/sys.stderr between the
    # setup and call phases, which would displace proxies installed by a fixture.
    cap = OutputCapture(limit=100)
    yield cap
    cap.uninstall()


def test_outside_a_task_writes_pass_through(
    capture: OutputCapture, capsys: pytest.CaptureFixture[str]
) -> None:
    capture.install()
    print("to the real stdout")
    print("to the real stderr", file=sys.stderr)
    assert capture.take() == ""
    out, err = capsys.readouterr()
    assert out == "to the real stdout\n" and err == "to the real stderr\n"


def test_a_task_captures_stdout_and_stderr_in_order(
    capture: OutputCapture, capsys: pytest.CaptureFixture[str]
) -> None:
    capture.install()
    capture.active = True
    print("one")
    print("two", file=sys.stderr)
    sys.stdout.write("three\n")
    assert capture.take() == "one\ntwo\nthree\n"
    assert capsys.readouterr() == ("", "")
    assert not capture.active and capture.take() == ""  # the next task starts empty


def test_output_over_the_limit_keeps_the_tail_with_a_marker(capture: OutputCapture) -> None:
    capture.install()
    capture.active = True
    for i in range(1000):
        print(f"line {i:04d}")  # 10 characters each: 10,000 in all
    log = capture.take()
    marker, tail = log.split("\n", 1)
    assert "9,900 earlier characters" in marker and "the last 100 are kept" in marker
    assert len(tail) == 100 and tail.endswith("line 0999\n")


def test_binary_writes_reach_the_original_buffer_uncaptured(capture: OutputCapture) -> None:
    class Original:
        def __init__(self) -> None:
            self.buffer = io.BytesIO()

    original = Original()
    proxy = _Proxy(capture, original)  # type: ignore[arg-type]
    capture.active = True
    proxy.buffer.write(b"raw bytes")
    assert original.buffer.getvalue() == b"raw bytes"
    assert capture.take() == ""


def test_uninstall_restores_the_streams() -> None:
    before = (sys.stdout, sys.stderr)
    cap = OutputCapture()
    cap.install()
    assert sys.stdout is not before[0]
    cap.uninstall()
    assert (sys.stdout, sys.stderr) == before


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 character"):
        OutputCapture(limit=0)


def entered_worker(fn: object, capture: OutputCapture) -> Worker:
    worker = Worker(capture)
    spec = cloudpickle.dumps({"kind": "function", "fn": fn})
    assert worker.enter(1, "test", spec, b"") is None
    return worker


def chatty(x: int) -> int:
    print(f"working on {x}")
    return x + 1


def failing(x: int) -> int:
    print("about to fail")
    raise ValueError(f"bad {x}")


def silent(x: int) -> int:
    return x * 2


def test_worker_pairs_the_result_with_what_the_task_printed(capture: OutputCapture) -> None:
    capture.install()
    worker = entered_worker(chatty, capture)
    out, log = worker.invoke(7, _serde.dumps(((41,), {})))
    assert _serde.loads(out) == 42 and log == "working on 41\n"


def test_worker_keeps_a_failed_tasks_output(capture: OutputCapture) -> None:
    capture.install()
    worker = entered_worker(failing, capture)
    error, log = worker.invoke(7, _serde.dumps(((3,), {})))
    assert error[0] == errors.USER_EXCEPTION and "bad 3" in error[1]
    assert log == "about to fail\n"


def test_a_silent_task_returns_bare_bytes(capture: OutputCapture) -> None:
    capture.install()
    worker = entered_worker(silent, capture)
    out = worker.invoke(7, _serde.dumps(((4,), {})))
    assert isinstance(out, bytes) and _serde.loads(out) == 8
