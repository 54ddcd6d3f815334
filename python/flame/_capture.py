"""Per-task capture of what a task's code prints, inside an executor process.

:class:`OutputCapture` installs one proxy stream as ``sys.stdout`` and one as
``sys.stderr`` for the life of the executor. While ``active`` is true (one task) both
proxies append to one shared buffer, so stdout and stderr lines keep their order, and
:meth:`OutputCapture.take` returns the text; outside a task they pass writes through to the
original streams. Installing the proxies once, rather than swapping ``sys.stdout`` per
task, keeps the hot path of a task that prints nothing to two attribute stores and one
emptiness check.

What is captured is Python-level writes: ``print``, ``sys.stdout.write``, and anything else
that looks ``sys.stdout``/``sys.stderr`` up when it writes. Writes that go straight to file
descriptors 1 and 2 (C extensions, ``os.write``, child processes) are not captured; they
reach the executor's own output as before.

The buffer is bounded: past :data:`MAX_LOG_CHARS` only the tail is kept, and the log then
starts with a line saying how much was dropped.
"""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

__all__ = ["MAX_LOG_CHARS", "OutputCapture"]

#: Most characters of one task's output kept (the tail); 1 Mi characters.
MAX_LOG_CHARS = 1 << 20


class _Proxy(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: captures during a task, else passes
    through to the stream it replaced."""

    def __init__(self, capture: OutputCapture, original: TextIO) -> None:
        super().__init__()
        self._capture = capture
        self._original = original

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        capture = self._capture
        if capture.active:
            capture.append(s)
        else:
            self._original.write(s)
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._capture.active:
            self._original.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return not self._capture.active and self._original.isatty()

    @property
    def buffer(self) -> Any:
        # Binary writes go to the original stream, uncaptured, like writes to the
        # descriptor; without this, code using sys.stdout.buffer would break in tasks.
        return self._original.buffer

    def fileno(self) -> int:
        # Code that needs a real descriptor (faulthandler, subprocess) gets the original's;
        # what it writes there is not captured (see the module docstring).
        return self._original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._original, "errors", None)


class OutputCapture:
    """One executor's capture of its tasks' stdout and stderr (see the module docstring)."""

    def __init__(self, limit: int = MAX_LOG_CHARS) -> None:
        if limit < 1:
            raise ValueError(f"the log limit must be at least 1 character, got {limit}")
        self.limit = limit
        # Both read directly by the worker's hot path (a task that prints nothing costs a
        # store to `active` and a truthiness test of `parts`).
        self.active = False
        self.parts: list[str] = []
        self._size = 0
        self._dropped = 0
        self._installed: tuple[TextIO, TextIO] | None = None

    def install(self) -> None:
        """Put the proxies in place of ``sys.stdout`` and ``sys.stderr``."""
        if self._installed is not None:
            return
        self._installed = (sys.stdout, sys.stderr)
        sys.stdout = _Proxy(self, sys.stdout)
        sys.stderr = _Proxy(self, sys.stderr)

    def uninstall(self) -> None:
        """Restore the original streams (if nobody replaced the proxies meanwhile)."""
        if self._installed is None:
            return
        out, err = self._installed
        self._installed = None
        if isinstance(sys.stdout, _Proxy) and sys.stdout._capture is self:
            sys.stdout = out
        if isinstance(sys.stderr, _Proxy) and sys.stderr._capture is self:
            sys.stderr = err

    def append(self, s: str) -> None:
        if not s:
            return
        self.parts.append(s)
        self._size += len(s)
        # Compact only once the buffer holds twice the limit, so a task that prints many
        # small lines pays for the trimming once per `limit` characters, not per write.
        if self._size > 2 * self.limit:
            self._trim()

    def take(self) -> str:
        """Stop capturing and return the task's output ("" if it printed nothing)."""
        self.active = False
        if not self.parts:
            return ""
        if self._size > self.limit:
            self._trim()
        text = "".join(self.parts)
        dropped = self._dropped
        self.parts.clear()
        self._size = 0
        self._dropped = 0
        if dropped:
            text = (
                f"[flame: {dropped:,} earlier characters of this task's output were dropped; "
                f"the last {self.limit:,} are kept]\n{text}"
            )
        return text

    def _trim(self) -> None:
        text = "".join(self.parts)
        cut = len(text) - self.limit
        self._dropped += cut
        self.parts = [text[cut:]]
        self._size = self.limit
