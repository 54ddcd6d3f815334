"""The web dashboard for real: the test session's embedded cluster runs a session, headless
Chromium loads the dashboard (its JavaScript polls the JSON API), and the rendered page must
show the session with its counts; the session page must show a failure's traceback. A
screenshot of the overview is saved to docs/dashboard.png (the one the README shows).

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); without it this
test is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import flame

# The README's screenshot; refreshed only when asked (FLAME_UPDATE_SCREENSHOT=1), so that a
# test run leaves the tree clean. Otherwise the screenshot goes to the test's temp dir.
SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "dashboard.png"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")


def browse(url: str, *extra: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``url``: page scripts get 4 s of (virtual) time to poll."""
    with tempfile.TemporaryDirectory(prefix="flame-chromium-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=4000",
            *extra,
            url,
        ]
        r = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def text_of(dom: str) -> str:
    """The page's visible text, tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


@flame.service(max_retries=0)
def square_or_fail(x: int) -> int:
    print(f"squaring {x}")
    if x % 10 == 7:
        raise ArithmeticError(f"refusing {x}")
    time.sleep(0.01)
    return x * x


def test_dashboard_shows_the_session_its_counts_and_failures(cluster: str, tmp_path: Path) -> None:
    login = flame.dashboard_url()
    assert login is not None and login.startswith("http://127.0.0.1:"), login
    # The URL logs in once (?token=, #11): the dashboard sets its cookie and redirects to the
    # page without the token, keeping the #fragment. Every browse below is a new browser.
    url, token = login.split("?token=")
    # Three waves a second apart, so the tasks/s chart has a shape.
    futs: list[flame.Future] = []
    for wave in range(3):
        futs += [square_or_fail(x) for x in range(wave * 40, wave * 40 + 40)]
        flame.wait(futs, num_returns=len(futs), timeout=60)
        time.sleep(1.0)
    sid = futs[0].session_id
    failed = sum(1 for f in futs if f.exception() is not None)
    assert failed == 12

    request = urllib.request.Request(
        f"{url}api/overview", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        listed = {s["id"]: s for s in json.load(r)["sessions"]}
    assert (listed[sid]["succeeded"], listed[sid]["failed"]) == (108, 12)

    page = text_of(browse(login, "--dump-dom").stdout)
    row = re.search(rf"\b{sid} square_or_fail open (\d+) (\d+) (\d+) (\d+) (\d+)", page)
    assert row, f"session {sid} not rendered: {page[:3000]}"
    pending, running, succeeded, failed_shown, _cancelled = map(int, row.groups())
    assert (pending, running, succeeded, failed_shown) == (0, 0, 108, 12), page[:3000]
    assert "tasks/s" in page and "cannot load" not in page

    detail = text_of(browse(f"{login}#/session/{sid}", "--dump-dom").stdout)
    assert f"Session {sid}" in detail, detail[:3000]
    assert "ArithmeticError: refusing 7" in detail, detail[:3000]
    assert "Traceback" in detail

    failed_task = next(f for f in futs if f.exception() is not None)
    task = text_of(browse(f"{login}#/task/{sid}/{failed_task.task_id}", "--dump-dom").stdout)
    assert f"Task {failed_task.task_id} of session {sid}" in task, task[:3000]
    assert "squaring 7" in task and "ArithmeticError: refusing 7" in task, task[:3000]

    only_failed = text_of(browse(f"{login}#/session/{sid}/failed", "--dump-dom").stdout)
    assert "failed tasks (12 of 12)" in only_failed, only_failed[:3000]

    shot = SCREENSHOT if os.environ.get("FLAME_UPDATE_SCREENSHOT") == "1" else tmp_path / "d.png"
    shot.parent.mkdir(exist_ok=True)
    browse(login, "--hide-scrollbars", "--window-size=1280,960", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
