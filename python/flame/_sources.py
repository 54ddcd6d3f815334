"""Service code that keeps where it came from: file names and source lines in remote
tracebacks.

cloudpickle (3.1) renames the file of every code object it pickles by value to
``<dynamic-code>``, so a task's traceback read ``File "<dynamic-code>", line 6, in work``
with no source line. Services are pickled here with a pickler that keeps each code object's
real file name and records which files it saw; the spec then carries those files' source
text (as the client's ``linecache`` has it: a script, a module, a notebook cell), and the
executor puts it into its own ``linecache`` before the service runs. Its tracebacks then
show the user's file, line and source text as a local traceback would, also on a machine
that does not have the file.
"""

from __future__ import annotations

import io
import linecache
import types
from collections import ChainMap
from typing import Any

import cloudpickle

__all__ = ["SOURCES_KEY", "dumps_with_sources", "install"]

# The key of a service spec (a dict) that holds ``{file name: source text}``.
SOURCES_KEY = "sources"
# Files larger than this are not shipped (their frames still name file and line).
_MAX_SOURCE = 1 << 20
# cloudpickle's reducer of code objects (private: without it, file names stay renamed).
_code_reduce = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)
_RENAMED = "<dynamic-code>"


class _KeepingPickler(cloudpickle.Pickler):
    """cloudpickle, but code objects keep their file name; the names are collected."""

    def __init__(self, file: io.BytesIO, protocol: int) -> None:
        self.files: set[str] = set()
        # Before __init__: the C pickler reads its dispatch table when it is made.
        self.dispatch_table = ChainMap(
            {types.CodeType: self._reduce_code}, cloudpickle.Pickler.dispatch_table
        )
        super().__init__(file, protocol=protocol)

    def _reduce_code(self, code: types.CodeType) -> Any:
        assert _code_reduce is not None
        make, args = _code_reduce(code)
        self.files.add(code.co_filename)
        args = tuple(code.co_filename if a is _RENAMED or a == _RENAMED else a for a in args)
        return make, args


def _dumps(obj: object, protocol: int) -> tuple[bytes, set[str]]:
    buf = io.BytesIO()
    pickler = _KeepingPickler(buf, protocol)
    pickler.dump(obj)
    return buf.getvalue(), pickler.files


def _source_of(filename: str) -> str | None:
    lines = linecache.getlines(filename)  # also notebook cells, which have no file
    text = "".join(lines)
    return text if lines and len(text) <= _MAX_SOURCE else None


def dumps_with_sources(obj: object, protocol: int) -> bytes:
    """Pickle a service description by value; a dict also gets the source text of the
    files its code comes from (under :data:`SOURCES_KEY`)."""
    if _code_reduce is None:  # a cloudpickle without the reducer: plain cloudpickle
        return cloudpickle.dumps(obj, protocol=protocol)
    data, files = _dumps(obj, protocol)
    if not isinstance(obj, dict) or not files:
        return data
    sources = {f: text for f in sorted(files) if (text := _source_of(f)) is not None}
    if not sources:
        return data
    return _dumps({**obj, SOURCES_KEY: sources}, protocol)[0]


def install(sources: dict[str, str] | None) -> None:
    """Make ``linecache`` (and so every traceback of this process) read the shipped source
    text of these files, whether or not this machine has them."""
    for filename, text in (sources or {}).items():
        lines = text.splitlines(keepends=True)
        # mtime None: linecache.checkcache leaves the entry alone.
        linecache.cache[filename] = (len(text), None, lines, filename)
