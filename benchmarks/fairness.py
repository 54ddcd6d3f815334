"""The fairness scenario on Flame, Ray and Dask: session A queues 2,000 long-ish tasks,
then session B submits 50 short ones; B's completion time with A running vs alone.

    python benchmarks/fairness.py --system flame|ray|dask [--size smoke|small|full]
    python benchmarks/fairness.py --compare           # all three, one after another
    python benchmarks/fairness.py --smoke             # flame at tiny sizes, ~5 s, no record

The scenario is the ``fairness`` workload (``workloads/fairness.py``); like every workload it
runs in a fresh process per (system, repeat) with 2 single-threaded workers, through the
same adapters as ``run.py``. The table (median [min–max] over the repeats) is appended to
benchmarks/RESULTS.md with the date, machine, versions and command unless ``--no-record``.
Ray and Dask need the benchmark venv (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import time
from typing import Any

import report
import run
import systems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/fairness.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--system", choices=sorted(systems.NAMES), default="flame")
    p.add_argument("--compare", action="store_true", help="run flame, ray and dask")
    p.add_argument("--size", choices=["smoke", "small", "full"], default="small")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="--size smoke --no-record")
    p.add_argument("--no-record", dest="record", action="store_false")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.record = "smoke", False
    order = ["flame", "ray", "dask"] if args.compare else [args.system]
    missing = [s for s in order if importlib.util.find_spec(s) is None]
    if missing:
        print(
            f"fairness.py: {', '.join(missing)} cannot be imported by {sys.executable}; "
            "use the benchmark venv (benchmarks/README.md)",
            file=sys.stderr,
        )
        return 2

    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    failures = []
    for rep in range(args.repeat):
        for system in order:
            got, error = run._measure(system, "fairness", args.size, run.TIMEOUTS[args.size])
            for r in got:
                rec = {"system": system, "workload": "fairness", "repeat": rep, **r}
                print(json.dumps(rec), flush=True)
                records.append(rec)
            if error:
                failures.append(f"{system} repeat {rep + 1}: {error}")
                print(f"# {system}: FAILED {error.splitlines()[0]}", file=sys.stderr)
    if args.record and records:
        _append(records, order, args, when, time.monotonic() - started)
    for f in failures:
        print(f"fairness.py: {f}", file=sys.stderr)
    return 1 if failures else 0


def _append(
    records: list[dict[str, Any]],
    order: list[str],
    args: argparse.Namespace,
    when: str,
    took: float,
) -> None:
    sizes = run.workloads.load("fairness").SIZES[args.size]
    which = "--compare" if args.compare else f"--system {args.system}"
    lines = [
        "",
        f"## {when} — fairness (`fairness.py {which} --size {args.size}`)",
        "",
        f"Machine: {report.machine()}.  ",
        f"Versions: {report.versions(sys.executable)}.  ",
        f"Command: `{report.command()}`  ",
        f"Scenario: session A submits {sizes['a_tasks']} tasks of {sizes['a_secs'] * 1000:g} ms; "
        f"once A's first result is back, session B submits {sizes['b_tasks']} tasks of "
        f"{sizes['b_secs'] * 1000:g} ms. 2 worker processes × 1 thread per system, a fresh "
        f"process per (system, repeat); {args.repeat} repeat(s); took {took / 60:.1f} min. "
        "`b_alone`: B on an idle cluster; `b_with_a`: B while A runs; `b_slowdown`: their "
        "ratio (1 = B does not notice A); `a_total`: A from submit to its last result.",
        "",
        report.table(records, order),
    ]
    with open(run.RESULTS, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"# appended to {run.RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
