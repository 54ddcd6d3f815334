"""Text output of the ``flame`` CLI: tables that fit 100 columns, times, durations, bars.

Every function here is pure (strings in, strings out), so the layout is unit-tested without
a daemon.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

#: Widest line a table may print.
WIDTH = 100
_GAP = "  "


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int = WIDTH) -> str:
    """Left-aligned columns; when too wide, the widest columns are cut (ending in "…")."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    budget = width - len(_GAP) * (len(headers) - 1)
    while sum(widths) > budget:
        i = max(range(len(widths)), key=lambda k: widths[k])
        if widths[i] <= 4:
            break  # more columns than fit at 4 characters each: let the line run long
        widths[i] -= 1
    lines = [_line(headers, widths)]
    lines += [_line(row, widths) for row in cells]
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    parts = [_fit(c, w).ljust(w) for c, w in zip(cells, widths)]
    return _GAP.join(parts).rstrip()


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return " ".join(str(v).split())  # one line per row, whatever the value holds


def clock(ms: int | None) -> str:
    """Milliseconds since the epoch as local ``YYYY-MM-DD HH:MM:SS``; "-" when unknown."""
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def duration(start_ms: int | None, end_ms: int | None) -> str:
    """``end - start`` as "850ms", "12.3s", "4m05s"; "-" when either end is unknown."""
    if not start_ms or not end_ms:
        return "-"
    ms = max(0, end_ms - start_ms)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(ms // 1000, 60)
    return f"{minutes}m{seconds:02d}s"


def bar(done: int, total: int, width: int = 20) -> str:
    """A progress bar of finished tasks: ``[#######.............]``."""
    filled = width if total == 0 else min(width, done * width // total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    """``key: value`` lines with the values aligned."""
    pad = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k + ':':<{pad + 1}} {_cell(v)}" for k, v in pairs)
