"""One embedded Flame cluster for the whole integration session, and the check that it
leaves no executor process behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import executors_of, wait_until_gone

import flame
from flame import api


@pytest.fixture(scope="session", autouse=True)
def cluster() -> Iterator[str]:
    """The address of an embedded cluster started with ``flame.init()``."""
    os.environ.pop("FLAME_ADDRESS", None)
    flame.init(slots=4)
    address = api.runtime().conn.address
    yield address
    flame.shutdown()
    if Path("/proc").is_dir():
        host_port = address.split("://")[-1]  # executors get the address with a scheme
        left = wait_until_gone(lambda: executors_of(host_port))
        assert not left, f"executor processes left behind: {left}"
