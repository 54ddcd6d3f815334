"""Console entry points (see ``[project.scripts]`` in pyproject.toml): ``flame-daemon`` and
``flame``, the command line for looking at and steering a running cluster.

``flame`` exit codes, for scripts:
    0  success
    1  not found, or the daemon refused (unknown task or session, task already finished)
    2  usage error (bad command line, malformed id)
    3  the daemon cannot be reached
    4  the daemon refused the credentials (no token, or a wrong, expired or revoked one)
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_UNAUTHENTICATED = 0, 1, 2, 3, 4
DEFAULT_ADDRESS = "http://127.0.0.1:8080"


def daemon_main() -> None:
    """``flame-daemon``: run the session manager and executor manager (see ``--help``)."""
    from flame import _core

    sys.exit(_core.daemon_main(sys.argv))


def _parser() -> argparse.ArgumentParser:
    # --address and --json are accepted before or after the subcommand; on subcommands they
    # default to SUPPRESS so an option given first is not reset by the subparser.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=argparse.SUPPRESS,
        help=f"daemon address (default $FLAME_ADDRESS or {DEFAULT_ADDRESS})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="user token (default $FLAME_TOKEN, the `flame login` entry, or the local "
        "daemon's admin.token)",
    )
    p = argparse.ArgumentParser(
        prog="flame",
        description="Look at and steer a running Flame cluster.",
        epilog="exit codes: 0 ok, 1 not found or refused, 2 usage, 3 daemon unreachable, "
        "4 not authenticated",
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", parents=[common], help="cluster summary")
    ls = sub.add_parser("list", parents=[common], help="list sessions, tasks, executors, ...")
    ls.add_argument("what", choices=["sessions", "tasks", "executors", "nodes", "apps", "objects"])
    ls.add_argument("--state", help="only this state (e.g. open, failed, bound)")
    ls.add_argument("--session", type=int, help="only this session (required for tasks)")
    ls.add_argument("--node", type=int, help="objects: only those this node (id) holds")
    ls.add_argument(
        "--limit", type=int, default=100, help="tasks or objects per page (at most 1000)"
    )
    ls.add_argument("--offset", type=int, default=0, help="tasks or objects to skip")
    v = sub.add_parser("view", parents=[common], help="one session or task in detail")
    v.add_argument("kind", choices=["session", "task"])
    v.add_argument("id", help="SESSION for a session, SESSION/TASK for a task")
    c = sub.add_parser("cancel", parents=[common], help="cancel a task")
    c.add_argument("id", metavar="SESSION/TASK")
    cl = sub.add_parser("close", parents=[common], help="close a session (cancels the rest)")
    cl.add_argument("id", metavar="SESSION")
    lg = sub.add_parser("logs", parents=[common], help="a task's captured output")
    lg.add_argument("id", metavar="SESSION/TASK")
    li = sub.add_parser(
        "login",
        parents=[common],
        help="check a token against a daemon and keep it in ~/.flame/credentials",
    )
    li.add_argument("login_address", metavar="ADDRESS", help="e.g. https://head:8080")
    return p


def main(argv: list[str] | None = None) -> int:
    """``flame``: run one command; returns the exit code (see the module docs)."""
    from flame import errors
    from flame.cli import commands
    from flame.client import Connection

    args = _parser().parse_args(argv)  # exits 2 on a bad command line
    args.json = getattr(args, "json", False)
    address = getattr(args, "address", None) or os.environ.get("FLAME_ADDRESS") or DEFAULT_ADDRESS
    token = getattr(args, "token", None)
    if args.command == "login":
        from flame.cli import login

        return login.run(args.login_address, token)
    run = {
        "status": commands.status,
        "list": commands.list_,
        "view": commands.view,
        "cancel": commands.cancel,
        "close": commands.close,
        "logs": commands.logs,
    }[args.command]
    conn = None
    try:
        commands.validate(args)  # a malformed command line never waits on the network
        conn = Connection(address, timeout=5.0, client_name="flame-cli", token=token)
        return run(args, conn)
    except commands.UsageError as e:
        print(f"flame: {e}", file=sys.stderr)
        return EXIT_USAGE
    except errors.ConnectionError as e:
        print(f"flame: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except errors.AuthenticationError as e:
        print(f"flame: {e}", file=sys.stderr)
        return EXIT_UNAUTHENTICATED
    except errors.FlameError as e:
        print(f"flame: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if conn is not None:
            conn.close()


def cli_main() -> None:
    """The ``flame`` console script."""
    sys.exit(main())
