"""The benchmark suite: Flame side by side with Ray and Dask on the same small cluster.

    python benchmarks/run.py --system flame [--workload NAME ...] [--repeat 3]
                             [--size smoke|small|full] [--compare ray|dask] [--no-record]
    python benchmarks/run.py --smoke          # every flame workload at tiny sizes, ~5 s

Every (system, workload, repeat) runs in a fresh process (``child.py``) that starts its
own cluster of 2 single-threaded worker processes and stops it, so start-up and memory are
measured honestly and nothing carries over. With ``--compare PEER`` the two systems take
turns — system, peer, system, peer… for each repeat of each workload — and the table
reports their per-repeat ratios, in which the noise of a shared machine mostly cancels.

Prints one JSON line per measurement on stdout (progress goes to stderr) and, unless
``--no-record`` (or ``--smoke``), appends a table to benchmarks/RESULTS.md with the date,
machine, versions and this command. Ray and Dask are not test dependencies: run them with
the benchmark venv's interpreter (see benchmarks/README.md). Exits 1 if a measurement
failed or a system left a process behind.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import report
import systems
import workloads
from procmem import MemorySampler, leftovers

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
TIMEOUTS = {"smoke": 60.0, "small": 600.0, "full": 3600.0}  # seconds per fresh process
MB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    order = [args.system] + ([args.compare] if args.compare else [])
    missing = [
        s for s in order if not s.startswith("flame") and importlib.util.find_spec(s) is None
    ]
    if missing or importlib.util.find_spec("flame") is None:
        print(
            f"run.py: {', '.join(missing) or 'flame'} cannot be imported by {sys.executable}; "
            "use the benchmark venv: benchmarks/.venv/bin/python benchmarks/run.py … "
            "(set-up in benchmarks/README.md)",
            file=sys.stderr,
        )
        return 2

    started = time.monotonic()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = report.machine()
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    for name in args.workload:
        for rep in range(args.repeat):
            for system in order:
                t0 = time.monotonic()
                got, error = _measure(system, name, args.size, args.timeout)
                for r in got:
                    rec = {
                        "system": system,
                        "workload": name,
                        "metric": r["metric"],
                        "value": r["value"],
                        "unit": r["unit"],
                        "repeat": rep,
                        "sizes": r["sizes"],
                    }
                    print(json.dumps(rec, ensure_ascii=False), flush=True)
                    records.append(rec)
                status = f"FAILED: {error.splitlines()[0]}" if error else "ok"
                print(
                    f"# {system} {name} repeat {rep + 1}/{args.repeat}: {status} "
                    f"({time.monotonic() - t0:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if error:
                    failures.append(f"{system} {name} repeat {rep + 1}: {error}")
    took = time.monotonic() - started
    print(f"# {len(records)} measurements in {took:.1f} s", file=sys.stderr)

    if args.record and records:
        _append_results(args, order, records, failures, when, machine, took)
        print(f"# appended to {args.results}", file=sys.stderr)
    for f in failures:
        print(f"run.py: {f}", file=sys.stderr)
    return 1 if failures else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--system", choices=sorted(systems.NAMES), default="flame")
    p.add_argument(
        "--compare",
        choices=sorted(systems.NAMES),
        metavar="PEER",
        help="also run PEER, alternating with --system, and report ratios",
    )
    p.add_argument(
        "--workload",
        nargs="+",
        choices=workloads.NAMES,
        default=workloads.NAMES,
        metavar="NAME",
        help=f"default: all of {', '.join(workloads.NAMES)}",
    )
    p.add_argument("--repeat", type=int, default=None, help="default 3 (smoke: 1)")
    p.add_argument("--size", choices=["smoke", "small", "full"], default="small")
    p.add_argument(
        "--smoke", action="store_true", help="same as --size smoke --repeat 1 --no-record"
    )
    p.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="print only; do not append to RESULTS.md",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="FILE",
        help="append the table to FILE instead of benchmarks/RESULTS.md (also records a smoke run)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed to one fresh process (default by size)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.record = "smoke", False
        args.repeat = args.repeat or 1
    if args.size == "smoke" and args.results is None:
        args.record = False  # smoke numbers mean nothing
    args.results = args.results or RESULTS
    args.repeat = args.repeat or (1 if args.size == "smoke" else 3)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.compare == args.system:
        p.error("--compare needs a system other than --system")
    args.timeout = args.timeout or TIMEOUTS[args.size]
    return args


def _measure(
    system: str, workload: str, size: str, timeout: float
) -> tuple[list[dict[str, Any]], str | None]:
    """Run one workload on one system in a fresh process; (records, error or None)."""
    module = workloads.load(workload)
    env = dict(os.environ)
    # Workers of every system import the task functions by module name.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("FLAME_ADDRESS", None)  # always the embedded cluster, never a daemon
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
        out = Path(tmp) / "records.jsonl"
        cmd = [
            sys.executable,
            str(HERE / "child.py"),
            "--system",
            system,
            "--workload",
            workload,
            "--size",
            size,
            "--out",
            str(out),
        ]
        with open(Path(tmp) / "stderr", "w+") as err:
            env["BENCH_T0"] = repr(time.monotonic())
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
            sampler = None
            if getattr(module, "PARENT_SAMPLES_MEMORY", False):
                sampler = MemorySampler(proc.pid).start()
            error = None
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill(leftovers(proc.pid))  # the whole session, whatever its groups
                proc.wait()
                error = f"timed out after {timeout:g} s"
            peak = sampler.stop() if sampler else None
            left = _reap(proc.pid, grace=0.0 if error else 3.0)
            err.seek(0)
            tail = err.read()[-3000:]
        if error is None and proc.returncode != 0:
            error = f"exit code {proc.returncode}\n{tail}"
        if error is None and left:
            error = f"left {len(left)} process(es) behind: {left} (killed)"
        lines = out.read_text().splitlines() if out.exists() else []
        records = [json.loads(line) for line in lines]
    if peak is not None and proc.returncode == 0:
        used = module.SIZES[size]
        records += [
            {"metric": "peak_rss", "value": peak.rss / MB, "unit": "MB", "sizes": used},
            {"metric": "peak_pss", "value": peak.pss / MB, "unit": "MB", "sizes": used},
            {"metric": "processes", "value": peak.processes, "unit": "processes", "sizes": used},
        ]
    return records, error


def _reap(session: int, grace: float = 3.0) -> list[int]:
    """Wait up to ``grace`` s for the processes of the measured session to go; SIGKILL
    (by pid) the ones still there and return their pids."""
    deadline = time.monotonic() + grace
    while (left := leftovers(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill(left)
    return left


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _append_results(
    args: argparse.Namespace,
    order: list[str],
    records: list[dict[str, Any]],
    failures: list[str],
    when: str,
    machine: str,
    took: float,
) -> None:
    title = (
        " ".join(
            ["`run.py", "--system", args.system]
            + (["--compare", args.compare] if args.compare else [])
            + ["--size", args.size]
        )
        + "`"
    )
    alternating = ", ".join(order * 2) + "…" if len(order) == 2 else order[0]
    lines = [
        "",
        f"## {when} — {title}",
        "",
        f"Machine: {machine}.  ",
        f"Versions: {report.versions(sys.executable)}.  ",
        f"Command: `{report.command()}`  ",
        f"Set-up: 2 worker processes × 1 thread for every system; each (system, workload, "
        f"repeat) in a fresh process, order {alternating}; {args.repeat} repeat(s); "
        f"took {took / 60:.1f} min. Cells: median [min–max] over the repeats.",
    ]
    if len(order) == 2:
        lines.append(
            f"Last column: how many times better {order[0]} is than {order[1]} on that "
            f"metric (higher-is-better: {order[0]}/{order[1]}; lower-is-better: "
            f"{order[1]}/{order[0]}), median [min–max] of the per-repeat ratios; "
            f">1 means {order[0]} is ahead."
        )
    lines += ["", report.table(records, order)]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {f.splitlines()[0]}" for f in failures]
    text = args.results.read_text() if args.results.exists() else ""
    with open(args.results, "a") as f:
        if text and not text.endswith("\n"):
            f.write("\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
