"""Service code keeps its file name and ships its source text (flame._sources)."""

from __future__ import annotations

import importlib
import linecache
import pickle
import sys
import traceback
from pathlib import Path

import pytest

from flame import _serde, _sources
from flame._worker import Worker

USER_CODE = """\
def work(x):
    y = x + 1
    raise ValueError(f"boom {y}")  # the line a traceback must show
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    path = tmp_path / "flame_user_code.py"
    path.write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("flame_user_code")
    _serde.register_by_value(module.__name__)
    yield module, path
    sys.modules.pop("flame_user_code", None)
    linecache.cache.pop(str(path), None)


def test_the_file_is_gone_where_it_runs_and_the_traceback_still_shows_its_source(
    user_module,  # type: ignore[no-untyped-def]
) -> None:
    module, path = user_module
    data = _serde.dumps_function({"kind": "function", "fn": module.work, "retry": False})
    # What an executor on another machine sees: no such file, an empty linecache.
    path.unlink()
    linecache.cache.pop(str(path), None)
    sys.modules.pop("flame_user_code", None)
    spec = pickle.loads(data)
    assert spec[_sources.SOURCES_KEY] == {str(path): USER_CODE}
    _sources.install(spec[_sources.SOURCES_KEY])
    with pytest.raises(ValueError) as info:
        spec["fn"](1)
    text = "".join(traceback.format_exception(info.value))
    assert f'File "{path}", line 3, in work' in text
    assert 'raise ValueError(f"boom {y}")  # the line a traceback must show' in text
    assert "<dynamic-code>" not in text


def test_a_worker_installs_the_sources_of_its_spec(user_module) -> None:  # type: ignore[no-untyped-def]
    module, path = user_module
    data = _serde.dumps_function({"kind": "function", "fn": module.work, "retry": False})
    path.write_text("# another version of the file on this machine\n" * 3)
    worker = Worker()
    assert worker.enter(1, "app", data, b"") is None
    out = worker.invoke(1, _serde.dumps(((1,), {})))
    assert isinstance(out, tuple), out
    assert 'raise ValueError(f"boom {y}")' in out[2]  # the source that ran, not the file's


def test_values_that_are_not_specs_carry_no_sources(user_module) -> None:  # type: ignore[no-untyped-def]
    module, _ = user_module
    fn = pickle.loads(_serde.dumps_function(module.work))
    assert callable(fn)
