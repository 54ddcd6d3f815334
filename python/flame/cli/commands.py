"""The ``flame`` subcommands: each takes the parsed arguments and a connection, prints text
or JSON, and returns the exit code. Errors are raised; ``flame.cli.main`` maps them to exit
codes in one place.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from flame.cli import format as fmt
from flame.client import Connection

SESSION_FIELDS = (
    "id application state slots max_retries timeout priority pending running succeeded "
    "failed cancelled executors created_ms"
).split()


class UsageError(Exception):
    """A command line the daemon never sees: a malformed id, a missing option (exit 2)."""


def task_ref(text: str) -> tuple[int, int]:
    """``SESSION/TASK`` as two ids."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"expected SESSION/TASK (two positive integers), got {text!r}")
    return int(parts[0]), int(parts[1])


def session_ref(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise UsageError(f"expected a session id (a positive integer), got {text!r}")
    return int(text)


#: The ``--state`` values each list accepts (tasks: checked by the daemon, which names them).
LIST_STATES = {
    "sessions": ("open", "closed"),
    "executors": ("starting", "idle", "binding", "bound", "unbinding"),
    "nodes": (),
    "apps": (),
    "objects": (),
}


def validate(args: argparse.Namespace) -> None:
    """Check ids and options before anything is sent."""
    if args.command in ("cancel", "logs") or getattr(args, "kind", None) == "task":
        task_ref(args.id)
    elif args.command == "close" or getattr(args, "kind", None) == "session":
        session_ref(args.id)
    elif args.command == "list":
        validate_list(args)


def validate_list(args: argparse.Namespace) -> None:
    what = args.what
    if getattr(args, "node", None) is not None and what != "objects":
        raise UsageError(f"--node does not apply to flame list {what}")
    if what in ("tasks", "objects"):
        if what == "tasks" and args.session is None:
            raise UsageError("flame list tasks needs --session ID")
        if what == "objects" and (args.session is not None or args.state is not None):
            raise UsageError("--session and --state do not apply to flame list objects")
        if getattr(args, "node", None) is not None and args.node <= 0:
            raise UsageError(f"--node must be a node id (a positive integer), got {args.node}")
        if not 1 <= args.limit <= 1000:
            raise UsageError(f"--limit must be between 1 and 1000, got {args.limit}")
        if args.offset < 0:
            raise UsageError(f"--offset must be 0 or more, got {args.offset}")
        return
    if args.session is not None and what != "executors":
        raise UsageError(f"--session does not apply to flame list {what}")
    allowed = LIST_STATES[what]
    if args.state is not None and args.state not in allowed:
        if not allowed:
            raise UsageError(f"--state does not apply to flame list {what}")
        raise UsageError(
            f"unknown {what[:-1]} state {args.state!r}; use one of {', '.join(allowed)}"
        )


def session_dict(info: Any) -> dict[str, Any]:
    return {f: getattr(info, f) for f in SESSION_FIELDS}


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> int:
    """Print ``data`` as JSON with ``--json``, else the text ``text()`` builds."""
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text())
    return 0


def session_rows(sessions: list[dict[str, Any]]) -> str:
    rows = []
    for s in sessions:
        done = s["succeeded"] + s["failed"] + s["cancelled"]
        total = done + s["pending"] + s["running"]
        rows.append(
            (
                s["id"],
                s["application"],
                s["state"],
                fmt.bar(done, total, 12),
                s["pending"],
                s["running"],
                s["succeeded"],
                s["failed"],
                s["executors"],
                fmt.clock(s["created_ms"]),
            )
        )
    headers = (
        "ID",
        "APPLICATION",
        "STATE",
        "PROGRESS",
        "PEND",
        "RUN",
        "OK",
        "FAIL",
        "EXEC",
        "CREATED",
    )
    return fmt.table(headers, rows)


def task_rows(tasks: list[dict[str, Any]]) -> str:
    rows = [
        (
            f"{t['session_id']}/{t['task_id']}",
            t["state"],
            t["attempts"],
            fmt.duration(t["started_ms"], t["finished_ms"]),
            t["executor_id"],
            t["node_id"],
            (t["error"] or {}).get("message"),
        )
        for t in tasks
    ]
    return fmt.table(("TASK", "STATE", "TRIES", "DURATION", "EXECUTOR", "NODE", "ERROR"), rows)


def object_rows(objects: list[dict[str, Any]]) -> str:
    rows = [
        (
            f"{o['object_id']:#x}",
            o["size"],
            o["primary_node"] if o["primary_node"] is not None else "lost",
            ",".join(str(n) for n in o["copy_nodes"]) or "-",
            f"{o['session_id']}/{o['task_id']}" if o["task_id"] is not None else "put",
        )
        for o in objects
    ]
    return fmt.table(("OBJECT", "BYTES", "PRIMARY", "COPIES", "MADE BY"), rows)


def status(args: argparse.Namespace, conn: Connection) -> int:
    info = conn.cluster_info()
    executors = conn.list_executors()
    sessions = [session_dict(s) for s in conn.list_sessions() if s.state == "open"]
    data = {**info, "executors": executors, "open_sessions": sessions, "address": conn.address}

    def text() -> str:
        nodes = info["nodes"]
        busy = sum(1 for e in executors if e["inflight"])
        head = fmt.key_values(
            [
                ("daemon", conn.address),
                (
                    "nodes",
                    f"{sum(n['alive'] for n in nodes)} alive of {len(nodes)}, "
                    f"{sum(n['slots'] for n in nodes)} slots",
                ),
                ("executors", f"{len(executors)} ({busy} busy, {len(executors) - busy} idle)"),
                ("tasks", f"{info['tasks_pending']} pending, {info['tasks_running']} running"),
                ("sessions", f"{info['sessions_open']} open"),
            ]
        )
        return head + ("\n\n" + session_rows(sessions) if sessions else "")

    return emit(args, data, text)


def list_(args: argparse.Namespace, conn: Connection) -> int:
    what = args.what
    if what == "sessions":
        sessions = [session_dict(s) for s in conn.list_sessions()]
        if args.state:
            sessions = [s for s in sessions if s["state"] == args.state]
        return emit(args, sessions, lambda: session_rows(sessions))
    if what == "tasks":
        page = conn.list_tasks(args.session, state=args.state, limit=args.limit, offset=args.offset)

        def text() -> str:
            shown = f"{len(page['tasks'])} of {page['total']} tasks"
            return task_rows(page["tasks"]) + f"\n({shown})"

        return emit(args, page, text)
    if what == "objects":
        page = conn.list_objects(node_id=args.node or 0, limit=args.limit, offset=args.offset)

        def objects_text() -> str:
            shown = f"{len(page['objects'])} of {page['total']} objects"
            return object_rows(page["objects"]) + f"\n({shown})"

        return emit(args, page, objects_text)
    if what == "executors":
        execs = conn.list_executors()
        if args.state:
            execs = [e for e in execs if e["state"] == args.state]
        if args.session is not None:
            execs = [e for e in execs if e["session_id"] == args.session]
        # One annotation for the branches below: their tables differ in width.
        rows: list[tuple[Any, ...]]
        header: tuple[str, ...]
        rows = [(e["id"], e["node_id"], e["state"], e["session_id"], e["inflight"]) for e in execs]
        header = ("ID", "NODE", "STATE", "SESSION", "INFLIGHT")
        return emit(args, execs, lambda: fmt.table(header, rows))
    if what == "nodes":
        nodes = conn.cluster_info()["nodes"]
        rows = [
            (
                n["id"],
                n["name"],
                "alive" if n["alive"] else "lost",
                n["slots"],
                n["executors"],
                n["busy"],
            )
            for n in nodes
        ]
        header = ("ID", "NAME", "STATE", "SLOTS", "EXECUTORS", "BUSY")
        return emit(args, nodes, lambda: fmt.table(header, rows))
    apps = [{"name": n, "description": d} for n, d in conn.list_applications()]
    rows = [(a["name"], a["description"]) for a in apps]
    return emit(args, apps, lambda: fmt.table(("NAME", "DESCRIPTION"), rows))


def view(args: argparse.Namespace, conn: Connection) -> int:
    if args.kind == "session":
        s = session_dict(conn.get_session(session_ref(args.id)).info())
        done = s["succeeded"] + s["failed"] + s["cancelled"]
        total = done + s["pending"] + s["running"]
        pairs = [(k, s[k]) for k in SESSION_FIELDS if k != "created_ms"]
        pairs += [
            ("created", fmt.clock(s["created_ms"])),
            ("progress", f"{fmt.bar(done, total)} {done}/{total}"),
        ]
        return emit(args, s, lambda: fmt.key_values(pairs))
    t = conn.get_task(*task_ref(args.id))
    return emit(args, t, lambda: task_text(t))


def task_text(t: dict[str, Any]) -> str:
    pairs = [
        ("task", f"{t['session_id']}/{t['task_id']}"),
        ("state", t["state"]),
        ("attempts", t["attempts"]),
        ("submitted", fmt.clock(t["created_ms"])),
        ("started", fmt.clock(t["started_ms"])),
        ("finished", fmt.clock(t["finished_ms"])),
        ("queued for", fmt.duration(t["created_ms"], t["started_ms"])),
        ("ran for", fmt.duration(t["started_ms"], t["finished_ms"])),
        ("executor", t["executor_id"]),
        ("node", t["node_id"]),
        ("output", f"{t['output_bytes']} bytes"),
    ]
    err = t["error"]
    if err:
        pairs.append(("error", f"{err['kind']}: {err['message']}"))
    text = fmt.key_values(pairs)
    if err and err["traceback"]:
        text += "\n\n" + err["traceback"].rstrip()
    return text


def cancel(args: argparse.Namespace, conn: Connection) -> int:
    t = conn.cancel_task(*task_ref(args.id))
    return emit(args, t, lambda: f"task {t['session_id']}/{t['task_id']}: {t['state']}")


def close(args: argparse.Namespace, conn: Connection) -> int:
    s = session_dict(conn.close_session(session_ref(args.id)))
    return emit(args, s, lambda: f"session {s['id']}: {s['state']} ({s['cancelled']} cancelled)")


def logs(args: argparse.Namespace, conn: Connection) -> int:
    session_id, task_id = task_ref(args.id)
    text = conn.task_log(session_id, task_id)
    data = {"session_id": session_id, "task_id": task_id, "log": text}
    empty = f"(task {session_id}/{task_id} printed nothing, or has not finished)"
    return emit(args, data, lambda: text.rstrip("\n") if text else empty)
