"""Generate the CLI and configuration reference pages at docs build time.

Run by mkdocs-gen-files (see ``plugins`` in mkdocs.yml), so the reference cannot drift from
the code:

- ``reference/cli.md``: the ``--help`` text of ``flame-daemon`` and ``flame`` and of every
  subcommand, captured by running the commands found on ``PATH`` (the Flame installed in the
  environment that builds the docs; CI builds it from this checkout first);
- ``benchmarks/method.md`` and ``benchmarks/results.md``: copies of benchmarks/README.md and
  benchmarks/RESULTS.md, which stay where the benchmarks are;
- ``reference/config.md``: every key of the daemon's config file, read from
  ``rust/daemon/src/config.rs`` — the ``FileConfig`` / ``SchedulerTable`` structs (names,
  types, doc comments) and the commented ``toml`` example at the top of that file. A key in
  the example that the structs do not have fails the build.

``python docs/gen_reference.py OUT_DIR`` writes the same pages to a directory (for a look
without mkdocs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_RS = ROOT / "rust" / "daemon" / "src" / "config.rs"


class ReferenceError(Exception):
    """The reference cannot be generated; the message says what to fix."""


# ---- CLI ------------------------------------------------------------------------------------


def _help(argv: list[str]) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        raise ReferenceError(
            f"{argv[0]} is not on PATH: install Flame in the environment that builds the docs "
            "(pip install -e '.[docs]')"
        )
    # A fixed width so argparse wraps the same way on every terminal and in CI.
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    out = subprocess.run(
        [exe, *argv[1:], "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    if out.returncode != 0:
        raise ReferenceError(f"`{' '.join(argv)} --help` failed: {out.stderr.strip()}")
    return out.stdout.rstrip()


def _clap_subcommands(text: str) -> list[str]:
    """Subcommand names listed under clap's ``Commands:`` heading (``help`` left out)."""
    names: list[str] = []
    in_commands = False
    for line in text.splitlines():
        if line.strip() == "Commands:":
            in_commands = True
        elif in_commands and not line.strip():
            break
        elif in_commands and line.startswith("  ") and not line.startswith("   "):
            name = line.split()[0]
            if name != "help":
                names.append(name)
    return names


def _argparse_subcommands(text: str) -> list[str]:
    """Subcommand names listed under argparse's ``COMMAND`` positional argument."""
    names: list[str] = []
    in_commands = False
    for line in text.splitlines():
        if line.strip() == "COMMAND":
            in_commands = True
        elif in_commands and re.match(r"^    \S", line):
            names.append(line.split()[0])
        elif in_commands and not line.startswith("     "):
            break
    return names


def _command_section(argv: list[str], depth: int, clap: bool) -> list[str]:
    text = _help(argv)
    title = "`" + " ".join(argv) + "`"
    lines = [f"{'#' * depth} {title}", "", "```text", text, "```", ""]
    subs = _clap_subcommands(text) if clap else _argparse_subcommands(text)
    for sub in subs:
        lines += _command_section([*argv, sub], depth + 1, clap)
    return lines


def cli_page() -> str:
    lines = [
        "# Command line",
        "",
        "Generated at build time from the `--help` of the installed commands, so it matches",
        "the code. `flame-daemon` runs the cluster (its options come from the clap",
        "definitions in `rust/daemon/src/cli.rs`); `flame` looks at and steers a running one",
        "(`python/flame/cli`). See [Monitor a cluster](../how-to/monitor.md) for examples.",
        "",
    ]
    lines += _command_section(["flame-daemon"], 2, clap=True)
    lines += _command_section(["flame"], 2, clap=False)
    return "\n".join(lines)


# ---- config file ----------------------------------------------------------------------------

_FIELD = re.compile(r"^\s*pub (\w+): Option<(.+)>,\s*$")


def _struct_fields(source: str, struct: str) -> list[tuple[str, str, str]]:
    """``(name, type, doc)`` of each ``pub name: Option<T>`` field of ``struct``."""
    match = re.search(rf"pub struct {struct} \{{\n(.*?)\n\}}", source, re.S)
    if match is None:
        raise ReferenceError(f"{CONFIG_RS}: struct {struct} not found")
    fields, doc = [], []
    for line in match.group(1).splitlines():
        stripped = line.strip()
        if stripped.startswith("///"):
            doc.append(stripped[3:].strip())
            continue
        field = _FIELD.match(line)
        if field:
            fields.append((field.group(1), field.group(2), " ".join(doc)))
        doc = []
    return fields


def _toml_example(source: str) -> tuple[list[str], dict[tuple[str, str], tuple[str, str]], str]:
    """The module doc: its toml example lines, ``(table, key) -> (value, comment)``, and the
    prose after the example."""
    doc = [line[4:] if line.startswith("//! ") else line[3:] for line in source.splitlines()]
    doc = doc[: next(i for i, line in enumerate(source.splitlines()) if not line.startswith("//!"))]
    start = doc.index("```toml")
    end = doc.index("```", start + 1)
    block = doc[start + 1 : end]
    keys: dict[tuple[str, str], tuple[str, str]] = {}
    table = ""
    for line in block:
        if line.startswith("["):
            table = line.strip("[] ")
        elif "=" in line:
            key, _, rest = line.partition("=")
            value, _, comment = rest.partition(" # ")
            keys[(table, key.strip())] = (value.strip(), comment.strip())
    return block, keys, " ".join(line.strip() for line in doc[end + 1 :] if line.strip())


def _flag_help() -> dict[str, str]:
    """``config_key -> help`` from the long options of ``flame-daemon start/head/node --help``
    (``--state-dir`` is the key ``state_dir``): the flags and the file share their names."""
    helps: dict[str, str] = {}
    for sub in ("start", "head", "node"):
        flag, text = None, []
        for line in _help(["flame-daemon", sub]).splitlines() + [""]:
            option = re.match(r"^\s+(?:-\w, )?--([\w-]+)(?: <\w+>)?\s*(.*)$", line)
            if option or not line.strip():
                if flag and text:
                    helps.setdefault(flag.replace("-", "_"), " ".join(text))
                flag, text = (
                    (option.group(1), [option.group(2)] if option.group(2) else [])
                    if option
                    else (None, [])
                )
            elif flag:
                text.append(line.strip())
    return helps


# Rust field types as a TOML writer sees them.
_TOML_TYPES = {
    "String": "string",
    "PathBuf": "path (string)",
    "bool": "boolean",
    "std::net::IpAddr": "IP address (string)",
    "Vec<String>": "list of strings",
}


def _toml_type(rust: str) -> str:
    if re.fullmatch(r"u(8|16|32|64|size)", rust):
        return "integer ≥ 0"
    return _TOML_TYPES.get(rust, rust)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_keys() -> dict[str, set[str]]:
    """The keys a config file may hold: ``{"": top-level keys, "scheduler": its keys}``."""
    source = CONFIG_RS.read_text()
    return {
        "": {name for name, _, _ in _struct_fields(source, "FileConfig")} - {"scheduler"},
        "scheduler": {name for name, _, _ in _struct_fields(source, "SchedulerTable")},
    }


def config_page() -> str:
    source = CONFIG_RS.read_text()
    block, example, after = _toml_example(source)
    tables = {"": _struct_fields(source, "FileConfig"), "scheduler": []}
    tables["scheduler"] = _struct_fields(source, "SchedulerTable")
    flags = _flag_help()
    known = {(t, name) for t, fields in tables.items() for name, _, _ in fields}
    unknown = sorted(f"{t}.{k}".lstrip(".") for t, k in example if (t, k) not in known)
    if unknown:
        raise ReferenceError(
            f"{CONFIG_RS}: the toml example names keys the config structs do not have: "
            + ", ".join(unknown)
        )
    lines = [
        "# Configuration file",
        "",
        "Generated at build time from `rust/daemon/src/config.rs`. `flame-daemon start`, `head`",
        "and `node` take `--config flame.toml`; a flag given on the command line wins over the",
        "file, and a key the daemon does not know is an error naming it. Every key is optional.",
        "",
        "```toml",
        *block,
        "```",
        "",
    ]
    if after:
        lines += [after, ""]
    for table, fields in tables.items():
        if table:
            lines += [f"## `[{table}]`", ""]
        else:
            lines += ["## Top-level keys", ""]
        lines += ["| key | type | example | meaning |", "| --- | --- | --- | --- |"]
        for name, ty, doc in fields:
            value, comment = example.get((table, name), ("", ""))
            if name == "scheduler":
                continue  # the table below
            # The struct's doc comment, else the flag's help, else the example's comment.
            meaning = doc or (flags.get(name) if not table else None) or comment or "—"
            shown = f"`{_cell(value)}`" if value else ""
            lines.append(f"| `{name}` | {_cell(_toml_type(ty))} | {shown} | {_cell(meaning)} |")
        lines.append("")
    return "\n".join(lines)


# ---- benchmarks -----------------------------------------------------------------------------


def benchmarks_method_page() -> str:
    """benchmarks/README.md as it is, its link to RESULTS.md pointed at the copy below."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    # Index brackets in prose (`C[i][j]`) read as reference links to mkdocs-autorefs.
    text = re.sub(r"(\w)\[(\w+)\]\[(\w+)\]", r"\1\\[\2]\\[\3]", text)
    return text.replace("](RESULTS.md)", "](results.md)")


def benchmarks_results_page() -> str:
    return (ROOT / "benchmarks" / "RESULTS.md").read_text()


PAGES = {
    "reference/cli.md": cli_page,
    "reference/config.md": config_page,
    "benchmarks/method.md": benchmarks_method_page,
    "benchmarks/results.md": benchmarks_results_page,
}


def _write_with_gen_files() -> None:
    import mkdocs_gen_files

    for name, make in PAGES.items():
        with mkdocs_gen_files.open(name, "w") as f:
            f.write(make())


if __name__ == "__main__":
    if len(sys.argv) == 2:
        out = Path(sys.argv[1])
        for name, make in PAGES.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(make())
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
elif __name__ == "<run_path>":
    # mkdocs-gen-files runs this file with runpy.run_path; imported (as the docs test does,
    # to check the pages' toml examples against config_keys()) it writes nothing.
    _write_with_gen_files()
