"""A throw-away PostgreSQL server for tests and benchmarks (the state engine of #13).

Debian's server binaries (/usr/lib/postgresql/<ver>/bin) run a fresh cluster in a temp dir on
a free 127.0.0.1 port, its unix socket inside that dir, durability off (a test server holds
nothing worth a flush). PostgreSQL refuses to run as root, and CI runs as root: then every
server command runs as the `postgres` OS user (runuser) and the dir is handed to it. The
server is stopped and its dir removed on exit, on failure too. Mirrors the Rust fixture
(rust/core/src/storage/pg_test_server.rs).

    with postgres_server() as pg:        # raises PgUnavailable(reason) when none can run
        url = pg.fresh_database()        # postgres://flame@127.0.0.1:PORT/tN
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROLE = "flame"


class PgUnavailable(Exception):
    """No test server can run here; the message says why (tests skip with it)."""


def bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<ver>/bin holding initdb, or $FLAME_PG_BIN."""
    if os.environ.get("FLAME_PG_BIN"):
        return Path(os.environ["FLAME_PG_BIN"])
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (int(d.name), d / "bin")
        for d in (root.iterdir() if root.is_dir() else [])
        if d.name.isdigit() and (d / "bin" / "initdb").exists()
    )
    if not found:
        raise PgUnavailable(
            f"no PostgreSQL server binaries under {root}; install Debian's `postgresql` package"
        )
    return found[-1][1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A running server (see `postgres_server`)."""

    def __init__(self, directory: Path, bins: Path, port: int, run_as: str | None) -> None:
        self.dir = directory
        self.bin = bins
        self.port = port
        self.run_as = run_as
        self._next_db = 0

    def url(self, db: str) -> str:
        return f"postgres://{ROLE}@127.0.0.1:{self.port}/{db}"

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        r = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            # The binaries exist: a failure here is a failure, not a reason to skip.
            raise RuntimeError(f"{tool} failed ({r.returncode}): {r.stdout}{r.stderr}\n{tail}")

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run `sql` through psql (as the test role) and return its unaligned output."""
        cmd = [str(self.bin / "psql"), "-XAtq", "-v", "ON_ERROR_STOP=1", self.url(db), "-c", sql]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {r.stderr}")
        return r.stdout

    def fresh_database(self) -> str:
        """An empty database of its own, as a URL."""
        self._next_db += 1
        name = f"t{os.getpid()}_{self._next_db}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)


@contextmanager
def postgres_server(durable: bool = False) -> Iterator[PgServer]:
    """Start a server; stop it and remove its dir when the block ends, however it ends.

    `durable` keeps PostgreSQL's default fsync settings (for benchmarks: a commit is on disk
    before it is acknowledged); tests leave it off."""
    bins = bin_dir()
    run_as = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise PgUnavailable(
                "running as root, but there is no `postgres` OS user to run the test server as"
            ) from None
        run_as = "postgres"
    d = Path(tempfile.mkdtemp(prefix="flame-pg-"))
    server = PgServer(d, bins, _free_port(), run_as)
    started = False
    try:
        if run_as:
            os.chown(d, pw.pw_uid, pw.pw_gid)
        data = str(d / "data")
        server.run("initdb", "-D", data, "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {server.port} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not durable:
            opts += " -c fsync=off -c full_page_writes=off"
        server.run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", str(d / "server.log"), "-o", opts
        )
        started = True
        yield server
    finally:
        if started:
            try:
                server.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(d / "data"))
            except RuntimeError:
                pass
        shutil.rmtree(d, ignore_errors=True)
