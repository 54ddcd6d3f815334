"""What authentication and TLS cost (issue #11): no-op throughput and sequential latency on
the embedded cluster, a loopback head over plaintext + token, and a loopback head over TLS;
plus the time to connect (TLS handshake included) and to join a node with a join token.

    python benchmarks/auth.py --mode embedded|plain|tls|join [--tasks 20000] [--latency 2000]
    python benchmarks/auth.py --ab /path/to/before/bin/python [--rounds 5]

One mode per process (each starts its own cluster); `--ab` alternates this interpreter and
another one (a build from before #11) over the modes both have, round after round, because
the machine is shared and noisy. Prints one JSON line per run. Run by hand; results go to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import flame


@flame.service
def noop(x: int) -> int:
    return x


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon(args: list[str], port: int) -> subprocess.Popen[bytes]:
    """`flame-daemon ARGS` of this interpreter's environment, once it accepts connections."""
    exe = Path(sys.executable).with_name("flame-daemon")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"flame-daemon {args} did not listen on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(tasks: int, latency: int) -> dict[str, float]:
    noop(0).result()
    flame.get([noop(i) for i in range(1_000)])  # warm-up
    t0 = time.perf_counter()
    assert flame.get([noop(i) for i in range(tasks)]) == list(range(tasks))
    rate = tasks / (time.perf_counter() - t0)
    lat = []
    for i in range(latency):
        t = time.perf_counter()
        noop(i).result()
        lat.append((time.perf_counter() - t) * 1e6)
    q = statistics.quantiles(lat, n=100)
    return {"tasks_per_s": round(rate), "p50_us": round(q[49]), "p99_us": round(q[98])}


def connect_ms(address: str, n: int = 20, **kw: str) -> float:
    """Median time of a fresh connection (TLS handshake, hello, stream) to `address`."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = flame.connect(address, **kw)
        times.append((time.perf_counter() - t0) * 1e3)
        conn.close()
    return round(statistics.median(times), 2)


def run_mode(mode: str, tasks: int, latency: int) -> dict[str, object]:
    out: dict[str, object] = {"mode": mode, "flame": flame.__version__, "python": sys.executable}
    out["auth"] = "token" in inspect.signature(flame.init).parameters
    if mode == "embedded":
        flame.init(slots=2)
        out.update(measure(tasks, latency))
        flame.shutdown()
        return out
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as state:
        if mode == "join":
            return join_time(out, port, state)
        args = ["start", "--port", str(port), "--slots", "2", "--state-dir", state, "--no-http"]
        if mode == "tls":
            args.append("--tls")
        proc = daemon(args, port)
        scheme = "https" if mode == "tls" else "http"
        address = f"{scheme}://127.0.0.1:{port}"
        kw = {}
        if out["auth"]:  # the head's admin token, as its OS user finds it
            kw["token"] = (Path(state) / "admin.token").read_text().strip()
        try:
            out["connect_ms"] = connect_ms(address, **kw)
            flame.init(address, **kw)
            out.update(measure(tasks, latency))
            flame.shutdown()
        finally:
            stop(proc)
    return out


def join_time(out: dict[str, object], port: int, state: str) -> dict[str, object]:
    """A TLS head, then a node that joins with the head's join token: the time from starting
    the node process to the head listing it (process start, CA pinning, key and CSR, the
    JoinNode call, the mutual-TLS connection and registration)."""
    head = daemon(["head", "--port", str(port), "--state-dir", state, "--tls", "--no-http"], port)
    node = None
    try:
        token = ""
        assert head.stdout is not None
        for _ in range(20):
            line = head.stdout.readline().decode()
            if "--join-token" in line:
                token = line.split("--join-token", 1)[1].split()[0]
                break
        if not token:
            raise SystemExit("the head printed no join token")
        address = f"https://127.0.0.1:{port}"
        flame.init(address, token=(Path(state) / "admin.token").read_text().strip())
        exe = Path(sys.executable).with_name("flame-daemon")
        node_dir = os.path.join(state, "node")
        t0 = time.perf_counter()
        node = subprocess.Popen(
            [str(exe), "node", "--head", address, "--join-token", token, "--slots", "1"]
            + ["--state-dir", node_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
            text=True,
        )
        while not flame.nodes():
            if time.perf_counter() - t0 > 30:
                raise SystemExit("the node did not join within 30 s")
            time.sleep(0.002)
        out["join_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        flame.shutdown()
        stop(node)
        # The node's own account of the join (pin + key + CSR + JoinNode), without the
        # process start: its "joined" log line.
        assert node.stderr is not None
        for line in node.stderr.read().splitlines():
            if "total_ms" in line:
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                out["join_total_ms"] = round(float(fields["total_ms"]), 1)
                out["join_pin_ms"] = round(float(fields.get("pin_ms", "nan")), 1)
    finally:
        if node is not None:
            stop(node)
        stop(head)
    return out


def has_auth(python: str) -> bool:
    """Whether the flame of `python` has authentication (`flame.init(token=...)`)."""
    probe = "import inspect, flame; print('token' in inspect.signature(flame.init).parameters)"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "True"


def ab(other: str, rounds: int, tasks: int, latency: int) -> None:
    """Alternate this interpreter and `other` over the modes both have."""
    for r in range(rounds):
        for python in (sys.executable, other):
            for mode in ("embedded", "plain", "tls"):
                if mode == "tls" and not has_auth(python):
                    continue  # a build from before #11 has no TLS
                cmd = [python, __file__, "--mode", mode, "--tasks", str(tasks)]
                cmd += ["--latency", str(latency)]
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                line = res.stdout.strip().splitlines()[-1:] or [res.stderr.strip()[-300:]]
                print(f"round {r + 1}: {line[0]}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["embedded", "plain", "tls", "join"])
    p.add_argument("--ab", metavar="PYTHON", help="alternate with this interpreter's build")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--latency", type=int, default=2_000)
    args = p.parse_args()
    if args.ab:
        ab(args.ab, args.rounds, args.tasks, args.latency)
    elif args.mode:
        print(json.dumps(run_mode(args.mode, args.tasks, args.latency)))
    else:
        p.error("give --mode or --ab")


if __name__ == "__main__":
    main()
