"""One measurement in a fresh process: start one system, run one workload, stop.

    python benchmarks/child.py --system NAME --workload NAME --size SIZE --out FILE

Started by ``run.py`` (never by hand), in a session of its own, with ``BENCH_T0`` = the
runner's ``time.monotonic()`` just before the spawn, so that ``startup`` counts the
interpreter's own start. Writes one JSON object per measurement to ``--out``; exits 1 with
the traceback on stderr if the workload fails.
"""

import time

T_MAIN = time.monotonic()  # before anything but `time` is imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import systems  # noqa: E402
import workloads  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--system", required=True, choices=sorted(systems.NAMES))
    p.add_argument("--workload", required=True, choices=workloads.NAMES)
    p.add_argument("--size", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    workload = workloads.load(args.workload)
    sizes = workload.SIZES[args.size]
    system = systems.load(args.system)
    records: list[dict[str, Any]] = []

    def emit(metric: str, value: float | None, unit: str, **used: Any) -> None:
        records.append({"metric": metric, "value": value, "unit": unit, "sizes": used})

    if getattr(workload, "SELF_STARTING", False):
        t_spawn = float(os.environ.get("BENCH_T0", T_MAIN))
        workload.run(system, sizes, emit, t_spawn=t_spawn, t_main=T_MAIN)
    else:
        system.import_system()
        system.start()
        try:
            workload.run(system, sizes, emit)
        finally:
            system.stop()

    with open(args.out, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
