"""The state engine's cost (issue #13): no-op throughput and sequential latency of a loopback
head (`flame-daemon start`, 2 slots) keeping its state in SQLite (the default) or in
PostgreSQL (`--state-url`, a server on this machine started for the run from Debian's
binaries, with PostgreSQL's default durability: fsync on, synchronous_commit on).

    python benchmarks/state_engine.py [--rounds 5] [--tasks 20000] [--latency 2000]

The engines alternate round after round (the machine is shared and noisy); one JSON line per
run, then the medians. Run by hand; results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import flame

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python/tests/integration"))
from _postgres import postgres_server
from auth import daemon, free_port, measure, stop


def run(engine: str, url: str | None, tasks: int, latency: int) -> dict[str, object]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as state:
        args = ["start", "--port", str(port), "--slots", "2", "--state-dir", state, "--no-http"]
        if url:
            args += ["--state-url", url]
        proc = daemon(args, port)
        try:
            token = (Path(state) / "admin.token").read_text().strip()
            flame.init(f"http://127.0.0.1:{port}", token=token)
            out: dict[str, object] = {"engine": engine, **measure(tasks, latency)}
            flame.shutdown()
        finally:
            stop(proc)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--latency", type=int, default=2_000)
    args = p.parse_args()
    results: dict[str, list[dict[str, object]]] = {"sqlite": [], "postgres": []}
    with postgres_server(durable=True) as pg:
        version = pg.psql("SHOW server_version").strip()
        for r in range(args.rounds):
            for engine in ("sqlite", "postgres"):
                url = pg.fresh_database() if engine == "postgres" else None
                res = run(engine, url, args.tasks, args.latency)
                res["round"] = r + 1
                res["load"] = round(os.getloadavg()[0], 2)
                results[engine].append(res)
                print(json.dumps(res), flush=True)
    for engine, runs in results.items():
        rate = statistics.median(float(str(x["tasks_per_s"])) for x in runs)
        p50 = statistics.median(float(str(x["p50_us"])) for x in runs)
        print(f"{engine:9} median {rate:,.0f} tasks/s, p50 {p50:.0f} us ({len(runs)} runs)")
    print(f"PostgreSQL {version}")


if __name__ == "__main__":
    main()
