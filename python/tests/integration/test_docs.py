"""The documentation site (docs/, mkdocs.yml) is tested like code.

Every ```python / ```bash block of a page is either marked runnable — an HTML comment
``<!-- test: run -->`` on the line before its fence — or carries a visible title that says
why it is not run (``title="Not run by the docs test: needs three machines"``). A block
that is neither fails the marker test, so nothing slips through untested by accident.

- A page's runnable python blocks run in order in one fresh interpreter (this one, with
  the Flame under test), as one story: each starts from what the previous ones defined.
  ``flame.init()`` there starts an embedded cluster, since FLAME_ADDRESS is unset.
- Each runnable shell block runs with ``bash -euo pipefail`` in a temp dir holding a copy
  of examples/, with this interpreter's bin dir first on PATH (``python``, ``flame``,
  ``flame-daemon`` are the ones under test).
- The ``toml`` examples use only keys the daemon's config structs have.
- The ``toml`` examples use only keys of the daemon's config structs (config.rs).
- ``mkdocs build --strict`` must pass (broken links, missing references and the generated
  reference pages included); skipped, saying so, where mkdocs is not installed (it comes
  with the ``docs`` extra, which the README's test command installs).

Each run is in its own POSIX session and must leave no process behind.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from _procs import session_members, wait_until_gone

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"
RUN_MARK = "<!-- test: run -->"
SKIP_TITLE = "Not run by the docs test: "
CODE_LANGS = {"python", "py", "bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^(`{3,})(\w*)\s*(.*)$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    info: str  # what follows the language on the fence line
    code: str
    run: bool

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown page (top-level fences only)."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        fence, lang, info = m.groups()
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip() == fence),
            None,
        )
        if end is None:
            raise AssertionError(f"docs/{path.relative_to(DOCS)}:{i + 1}: unclosed code fence")
        before = lines[i - 1].strip() if i > 0 else ""
        found.append(
            Block(
                page=str(path.relative_to(DOCS)),
                line=i + 1,
                lang=lang.lower(),
                info=info,
                code="\n".join(lines[i + 1 : end]) + "\n",
                run=before == RUN_MARK,
            )
        )
        i = end + 1
    return found


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page)]


def skip_reason(block: Block) -> str | None:
    m = re.search(r'title="([^"]*)"', block.info)
    if m and m.group(1).startswith(SKIP_TITLE) and len(m.group(1)) > len(SKIP_TITLE) + 3:
        return m.group(1)[len(SKIP_TITLE) :]
    return None


def test_every_code_block_is_run_or_says_why_not() -> None:
    assert pages(), f"no pages under {DOCS}"
    unmarked = [
        b.where
        for b in all_blocks()
        if b.lang in CODE_LANGS and not b.run and skip_reason(b) is None
    ]
    assert not unmarked, (
        f"code blocks neither marked `{RUN_MARK}` nor titled "
        f'`title="{SKIP_TITLE}<reason>"`: {unmarked}'
    )
    wrong = [b.where for b in all_blocks() if b.run and b.lang not in CODE_LANGS - {"console"}]
    assert not wrong, f"`{RUN_MARK}` on a block that is not python or shell: {wrong}"


def _gen_reference() -> ModuleType:  # docs/gen_reference.py, which reads config.rs's config structs
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toml_examples_use_only_real_config_keys() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib comes with Python 3.11")
    known = _gen_reference().config_keys()
    wrong = []
    for b in all_blocks():
        if b.lang != "toml":
            continue
        doc = tomllib.loads(b.code)  # a syntax error fails the test, naming the line
        for key, value in doc.items():
            if isinstance(value, dict):
                wrong += [f"{b.where}: [{key}] {k}" for k in value if k not in known.get(key, ())]
            elif key not in known[""]:
                wrong.append(f"{b.where}: {key}")
    assert not wrong, f"config keys that rust/daemon/src/config.rs does not have: {wrong}"


def _run_isolated(argv: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLAME_ADDRESS", "FLAME_TOKEN")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # what it starts shares this session id: easy to find
    )
    try:
        out, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    if Path("/proc").is_dir():
        left = wait_until_gone(lambda: session_members(proc.pid))
        assert not left, f"{what} left processes behind: {left}"
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out}\n{err[-4000:]}"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# Each block is a file named after its page and line, so a traceback points at the docs
# (and a service defined in it carries its source, as one defined in a script does).
_RUNNER = """\
namespace = {"__name__": "__main__"}
for path in BLOCKS:
    print(f"--- {path}", flush=True)
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)
"""


def _python_pages() -> list[str]:
    return sorted({b.page for b in all_blocks() if b.run and b.lang in ("python", "py")})


def _shell_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.run and b.lang in ("bash", "sh", "shell")]


@pytest.mark.parametrize("page", _python_pages())
def test_python_blocks_run(page: str, tmp_path: Path) -> None:
    todo = []
    for b in blocks(DOCS / page):
        if b.run and b.lang in ("python", "py"):
            path = tmp_path / f"{b.page.replace('/', '__')}-line{b.line}.py"
            path.write_text(b.code)
            todo.append(str(path))
    script = tmp_path / "page.py"
    script.write_text(f"BLOCKS = {todo!r}\n{_RUNNER}")
    _run_isolated([sys.executable, str(script)], tmp_path, f"the python blocks of docs/{page}")


@pytest.mark.parametrize("block", _shell_blocks(), ids=lambda b: b.where)
def test_shell_block_runs(block: Block, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = tmp_path / "block.sh"
    script.write_text(block.code)
    _run_isolated(["bash", "-euo", "pipefail", str(script)], tmp_path, block.where)


def _mkdocs() -> list[str] | None:
    if importlib.util.find_spec("mkdocs") is not None:
        return [sys.executable, "-m", "mkdocs"]
    found = shutil.which("mkdocs")
    return [found] if found else None


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = _mkdocs()
    if mkdocs is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]' (the README's command)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    out = subprocess.run(
        [*mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout}\n{out.stderr}"
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()
