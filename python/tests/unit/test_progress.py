"""Progress bars of get/wait/as_completed, on local futures resolved by another thread."""

from __future__ import annotations

import concurrent.futures
import io
import re
import threading
import time

import pytest

import flame
from flame import errors


def resolve_later(futs: list[concurrent.futures.Future], delay: float = 0.01) -> threading.Thread:
    """Resolve ``futs`` one by one from a thread, as the completion pump would."""

    def run() -> None:
        for i, f in enumerate(futs):
            time.sleep(delay)
            f.set_result(i)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def final_count(text: str) -> tuple[int, int]:
    """The last ``n/total`` a text bar printed."""
    found = re.findall(r"(\d+)/(\d+)", text)
    assert found, f"no progress bar in {text!r}"
    n, total = found[-1]
    return int(n), int(total)


def test_get_with_a_bar_reaches_the_total_and_keeps_order() -> None:
    futs = [concurrent.futures.Future() for _ in range(12)]
    out = io.StringIO()
    resolve_later(futs)
    assert flame.get(futs, progress={"file": out, "desc": "squares"}) == list(range(12))
    text = out.getvalue()
    assert "squares" in text
    assert final_count(text) == (12, 12)


def test_a_string_is_the_description_and_the_bar_goes_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    futs = [concurrent.futures.Future() for _ in range(5)]
    resolve_later(futs)
    done, not_done = flame.wait(futs, progress="crunching")
    assert len(done) == 5 and not not_done
    err = capsys.readouterr().err
    assert "crunching" in err
    assert final_count(err) == (5, 5)


def test_wait_with_num_returns_counts_up_to_it() -> None:
    futs = [concurrent.futures.Future() for _ in range(6)]
    out = io.StringIO()
    resolve_later(futs[:3])
    done, not_done = flame.wait(futs, num_returns=3, progress={"file": out})
    assert done == futs[:3] and not_done == futs[3:]
    assert final_count(out.getvalue()) == (3, 3)


def test_wait_with_a_bar_returns_at_the_timeout() -> None:
    futs = [concurrent.futures.Future() for _ in range(4)]
    futs[0].set_result(0)
    out = io.StringIO()
    done, not_done = flame.wait(futs, timeout=0.2, progress={"file": out})
    assert done == futs[:1] and not_done == futs[1:]
    assert final_count(out.getvalue()) == (1, 4)


def test_get_with_a_bar_raises_a_timeout() -> None:
    futs = [concurrent.futures.Future() for _ in range(2)]
    futs[1].set_result(1)
    with pytest.raises(TimeoutError, match="1 of 2 futures unfinished"):
        flame.get(futs, timeout=0.2, progress={"file": io.StringIO()})


def test_get_with_a_bar_raises_the_first_failure_in_list_order() -> None:
    futs = [concurrent.futures.Future() for _ in range(3)]
    futs[2].set_exception(KeyError("late"))
    futs[1].set_exception(ValueError("first in order"))
    futs[0].set_result(0)
    with pytest.raises(ValueError, match="first in order"):
        flame.get(futs, progress={"file": io.StringIO()})


def test_as_completed_with_a_bar_yields_every_future() -> None:
    futs = [concurrent.futures.Future() for _ in range(8)]
    out = io.StringIO()
    resolve_later(futs)
    seen = list(flame.as_completed(futs, progress={"file": out}))
    assert sorted(f.result() for f in seen) == list(range(8))
    assert final_count(out.getvalue()) == (8, 8)


def test_a_bad_progress_value_is_refused_at_the_call() -> None:
    futs = [concurrent.futures.Future()]
    with pytest.raises(errors.InvalidArgumentError, match="progress must be"):
        flame.get(futs, progress=3)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentError, match="got list"):
        flame.as_completed(futs, progress=[1])  # type: ignore[arg-type]


def test_no_bar_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    futs = [concurrent.futures.Future() for _ in range(3)]
    resolve_later(futs)
    assert flame.get(futs) == [0, 1, 2]
    assert capsys.readouterr().err == ""
