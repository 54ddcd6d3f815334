"""Quick measurement of Flame's per-task overhead on the embedded local cluster.

    python benchmarks/quick.py [--tasks 10000] [--latency 1000] [--slots 2]

Prints start-up time (process already running → first result), no-op throughput (after a
warm-up) and sequential submit-and-wait latency percentiles. Run by hand; results go to
benchmarks/RESULTS.md. The full side-by-side suite (Ray, Dask) is issue #4's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import flame


@flame.service
def noop(x: int) -> int:
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--latency", type=int, default=1_000)
    p.add_argument("--slots", type=int, default=2)
    args = p.parse_args()

    t0 = time.perf_counter()
    flame.init(slots=args.slots)
    noop(0).result()
    startup = time.perf_counter() - t0

    flame.get([noop(i) for i in range(1_000)])  # warm-up
    t0 = time.perf_counter()
    results = flame.get([noop(i) for i in range(args.tasks)])
    elapsed = time.perf_counter() - t0
    assert results == list(range(args.tasks))

    t0 = time.perf_counter()
    results = flame.get(noop.map(range(args.tasks)))
    map_elapsed = time.perf_counter() - t0
    assert results == list(range(args.tasks))

    lat = []
    for i in range(args.latency):
        t = time.perf_counter()
        noop(i).result()
        lat.append((time.perf_counter() - t) * 1e6)
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    flame.shutdown()

    n = args.tasks
    print(f"startup (init + first result): {startup * 1000:.0f} ms")
    print(f"noop calls: {n} tasks in {elapsed:.2f} s = {n / elapsed:,.0f} tasks/s")
    print(f"noop .map:  {n} tasks in {map_elapsed:.2f} s = {n / map_elapsed:,.0f} tasks/s")
    print(
        f"latency over {args.latency} sequential calls: "
        f"p50 {q[49]:.0f} µs, p90 {q[89]:.0f} µs, p99 {q[98]:.0f} µs"
    )


if __name__ == "__main__":
    main()
