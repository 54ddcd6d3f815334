"""Multiply two matrices, one Flame task per cell: C[i][j] = row i of A · column j of B.

    python examples/matrix.py --size 8
    python examples/matrix.py --address 127.0.0.1:8080    # on a running flame-daemon

Prints C and checks it against numpy; exits with status 1 if they differ.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import flame


@flame.service
def dot(row: np.ndarray, column: np.ndarray) -> int:
    """One cell of the product."""
    return int(np.dot(row, column))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8, help="rows and columns of A and B")
    parser.add_argument("--address", help="a flame-daemon to use (default: embedded cluster)")
    args = parser.parse_args(argv)
    n = args.size
    if n < 1:
        parser.error("--size must be at least 1")

    rng = np.random.default_rng(0)
    a = rng.integers(-9, 10, size=(n, n))
    b = rng.integers(-9, 10, size=(n, n))
    columns = np.ascontiguousarray(b.T)  # column j of B as a contiguous row

    flame.init(args.address)
    cells = [(i, j) for i in range(n) for j in range(n)]
    futures = dot.map([a[i] for i, _ in cells], [columns[j] for _, j in cells])
    c = np.array(flame.get(futures), dtype=np.int64).reshape(n, n)
    flame.shutdown()

    print(c)
    expected = a @ b
    if not np.array_equal(c, expected):
        wrong = np.argwhere(c != expected)
        print(f"MISMATCH in {len(wrong)} cells, first at {tuple(wrong[0])}", file=sys.stderr)
        return 1
    print(f"{n}x{n} product of {n * n} tasks matches numpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
