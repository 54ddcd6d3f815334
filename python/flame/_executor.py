"""The executor process: ``python -m flame._executor --address A --executor-id N``.

Spawned by an executor manager for one executor slot. It runs the native executor loop
with a :class:`flame._worker.Worker` until the session manager tells it to stop (exit 0)
or something fails (exit 1, with the reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the executor loop; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m flame._executor", description=__doc__)
    parser.add_argument("--address", required=True, help="session manager address")
    parser.add_argument("--executor-id", required=True, type=int, help="id given by the daemon")
    args = parser.parse_args(argv)

    # Tasks that call the Flame API themselves talk to the same cluster instead of
    # starting an embedded one inside the executor.
    os.environ.setdefault("FLAME_ADDRESS", args.address)
    capture = None
    try:
        from flame import _blocking, _core, objects
        from flame._capture import OutputCapture
        from flame._worker import Worker

        objects.RESOLVE_REFS = True  # tasks get the values of the refs in their arguments
        # What tasks print goes back with their results (per-task logs), not to this
        # process's stdout/stderr.
        capture = OutputCapture()
        capture.install()
        _blocking.enable()  # this thread runs the tasks: its waits free the slot
        _core.run_executor(args.address, args.executor_id, Worker(capture))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if capture is not None:
            capture.uninstall()
        print(
            f"flame executor {args.executor_id} ({args.address}): {type(e).__name__}: {e}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
