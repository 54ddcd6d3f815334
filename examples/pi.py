"""Estimate π by Monte Carlo sampling, one Flame task per batch of samples.

Each task draws points in the unit square and counts those inside the quarter circle; a
done-callback per task adds its count to the total as results arrive, and a progress bar
shows how many tasks have finished.

    python examples/pi.py --tasks 100 --samples 1000000
    python examples/pi.py --no-progress                # no bar
    python examples/pi.py --address 127.0.0.1:8080    # on a running flame-daemon
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time

import numpy as np

import flame


@flame.service
def count_inside(samples: int, seed: int) -> int:
    """How many of ``samples`` random points of the unit square fall in the circle."""
    rng = np.random.default_rng(seed)
    x = rng.random(samples)
    y = rng.random(samples)
    return int(np.count_nonzero(x * x + y * y <= 1.0))


class Tally:
    """Sums the tasks' counts from their done-callbacks (called on Flame's thread)."""

    def __init__(self, tasks: int) -> None:
        self.inside = 0
        self.errors: list[BaseException] = []
        self._left = tasks
        self._lock = threading.Lock()
        self.all_done = threading.Event()

    def add(self, future: flame.Future) -> None:
        with self._lock:
            error = future.exception()
            if error is not None:
                self.errors.append(error)
            else:
                self.inside += future.result()
            self._left -= 1
            if self._left == 0:
                self.all_done.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="number of tasks")
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples per task")
    parser.add_argument("--address", help="a flame-daemon to use (default: embedded cluster)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.samples < 1:
        parser.error("--tasks and --samples must be at least 1")

    flame.init(args.address)
    start = time.monotonic()
    tally = Tally(args.tasks)
    futures = count_inside.map([args.samples] * args.tasks, range(args.tasks))
    for future in futures:
        future.add_done_callback(tally.add)
    flame.wait(futures, progress=False if args.no_progress else "pi")
    tally.all_done.wait()  # callbacks run just after their future is marked done
    elapsed = time.monotonic() - start
    flame.shutdown()

    if tally.errors:
        print(f"{len(tally.errors)} tasks failed; first: {tally.errors[0]!r}", file=sys.stderr)
        return 1
    total = args.tasks * args.samples
    estimate = 4.0 * tally.inside / total
    print(
        f"pi ~ {estimate:.6f} (error {abs(estimate - math.pi):.2e}) from {total:,} samples "
        f"in {args.tasks} tasks, {elapsed:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
