"""Console entry points (see ``[project.scripts]`` in pyproject.toml)."""

from __future__ import annotations

import sys


def daemon_main() -> None:
    """``flame-daemon``: run the session manager and executor manager (see ``--help``)."""
    from flame import _core

    sys.exit(_core.daemon_main(sys.argv))
