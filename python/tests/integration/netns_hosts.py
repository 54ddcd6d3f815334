"""Test hosts with a network of their own: N Linux network namespaces ("hosts"), each with a
veth into a bridge that lives in a namespace of its own, for tests that need real links to
cut, slow down or lose (#13). Needs root and iproute2 (`ip`); `tc netem` is optional.

Nothing is added to the machine's own network namespace: every veth is created inside the
bridge's namespace with its peer moved straight into the host's, and no namespace has a
route out, so no packet can leave them. Host i has the address 10.A.B.i on a /24 picked at
random per run (10.77-10.99); namespaces are named `flamet-<pid>-<random>-...`, so runs in
parallel never collide and a sweep can remove what a crashed run (dead pid) left behind.

Import: the integration tests import it by name (their folder is on `sys.path`); benchmarks
add it first::

    sys.path.insert(0, str(REPO / "python/tests/integration"))
    import netns_hosts

    with netns_hosts.Hosts(3) as hosts:          # raises Unavailable when it cannot be made
        p = hosts.run(1, ["python", "-c", "..."])  # a Popen in host 1, own process group
        hosts.cut(2); hosts.heal(2); hosts.kill_host(3)

In pytest, `with netns_hosts.hosts_or_skip(3) as hosts:` skips with the reason instead.
Cleanup (processes first, then namespaces) runs on leaving the `with`, at exit (atexit) for
a run that never got there, and for dead runs' leftovers whenever a new `Hosts` is made.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PREFIX = "flamet-"
_NETNS_DIR = Path("/var/run/netns")


class Unavailable(RuntimeError):
    """Namespaces (or netem) cannot be used here; the message says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why namespaced hosts cannot be made here, or `None` when they can."""
    if os.geteuid() != 0:
        return "network-namespace hosts need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "network-namespace hosts need iproute2 (`ip`): apt-get install iproute2"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def _kill_namespace_processes(ns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in `ns` until none is left (a dying one may have forked)."""
    deadline = time.monotonic() + timeout
    while pids := _pids(ns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes left in namespace {ns}: {pids}")
        time.sleep(0.05)


def _delete_namespace(ns: str) -> None:
    _kill_namespace_processes(ns)
    _ip("netns", "del", ns, check=False)


def sweep_stale() -> list[str]:
    """Remove namespaces (and their processes) of earlier runs whose process is dead."""
    removed = []
    names = _ip("netns", "list", check=False).stdout.split("\n")
    for name in (line.split()[0] for line in names if line.strip()):
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _delete_namespace(name)
            removed.append(name)
    return removed


class Hosts:
    """`n` hosts, numbered 1..n, joined by one bridge. A context manager; `close()` is also
    registered with atexit and safe to call twice."""

    def __init__(self, n: int) -> None:
        reason = unavailable_reason()
        if reason:
            raise Unavailable(reason)
        sweep_stale()
        tag = f"{PREFIX}{os.getpid()}-{random.randrange(16**6):06x}"
        self.bridge_ns = f"{tag}-br"
        self.subnet = f"10.{random.randint(77, 99)}.{random.randint(0, 255)}"
        self.namespaces = {i: f"{tag}-h{i}" for i in range(1, n + 1)}
        self._procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        br = self.bridge_ns
        _ip("netns", "add", br)
        _ip("-n", br, "link", "set", "lo", "up")
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        for i, ns in self.namespaces.items():
            _ip("netns", "add", ns)
            # Made in the bridge's namespace, the peer moved straight into the host's: the
            # machine's own namespace never sees either end.
            veth = ["type", "veth", "peer", "name", "eth0", "netns", ns]
            _ip("-n", br, "link", "add", f"h{i}", *veth)
            _ip("-n", br, "link", "set", f"h{i}", "master", "br0")
            _ip("-n", br, "link", "set", f"h{i}", "up")
            _ip("-n", ns, "link", "set", "lo", "up")  # the daemon may use loopback
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def address(self, host: int) -> str:
        """Host `host`'s IPv4 address (reachable from the other hosts only)."""
        return f"{self.subnet}.{host}"

    def run(
        self,
        host: int,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        **popen: object,
    ) -> subprocess.Popen[str]:
        """Start `argv` in host `host` (its own process group and session, so the whole
        group can be killed); other keywords go to `Popen` (text mode by default)."""
        popen.setdefault("text", True)
        proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.namespaces[host], *argv],
            env=env,
            start_new_session=True,
            **popen,
        )
        self._procs.append(proc)
        return proc

    def cut(self, host: int) -> None:
        """Take host `host`'s link down (bridge side): it reaches no one, no one reaches it,
        and its processes live on."""
        _ip("-n", self.bridge_ns, "link", "set", f"h{host}", "down")

    def heal(self, host: int) -> None:
        _ip("-n", self.bridge_ns, "link", "set", f"h{host}", "up")

    def netem(self, host: int, delay_ms: int, loss_pct: float) -> None:
        """Delay and drop packets host `host` sends (its eth0's egress).

        Raises `Unavailable` naming the reason where the kernel has no netem."""
        argv = ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem"]
        argv += ["delay", f"{delay_ms}ms", "loss", f"{loss_pct}%"]
        proc = subprocess.run(
            ["ip", "netns", "exec", self.namespaces[host], *argv],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise Unavailable(f"tc netem is not available here: {proc.stderr.strip()}")

    def pids(self, host: int) -> list[int]:
        """Every process in host `host`."""
        return _pids(self.namespaces[host])

    def kill_host(self, host: int) -> None:
        """SIGKILL every process in host `host`, as if its machine died."""
        _kill_namespace_processes(self.namespaces[host])

    def close(self) -> None:
        """Kill every process started here or living in a host, delete the namespaces."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for ns in [*self.namespaces.values(), self.bridge_ns]:
            _delete_namespace(ns)
        atexit.unregister(self.close)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def hosts_or_skip(n: int) -> Iterator[Hosts]:
    """`Hosts(n)` in a test: skipped, with the reason, where namespaces cannot be made."""
    import pytest

    try:
        hosts = Hosts(n)
    except Unavailable as e:
        pytest.skip(str(e))
    with hosts:
        yield hosts
