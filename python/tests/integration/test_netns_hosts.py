"""The namespaced test hosts themselves (netns_hosts, #13): hosts reach each other over TCP,
a cut link stops that and a healed one brings it back, the machine's own network is never
touched, and closing (or a sweep after a crashed run) leaves no namespace and no process."""

from __future__ import annotations

import subprocess
import sys

import netns_hosts
import pytest
from netns_hosts import hosts_or_skip

# Host 2 serves: answers every connection with "pong"; prints "ready" once listening.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"pong"); c.close()
"""
# Host 1 connects once, 1 s at most: prints what it got or the error.
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 7000), timeout=1) as c:
        print(c.recv(4).decode())
except OSError as e:
    print(type(e).__name__)
"""


def connect(hosts: netns_hosts.Hosts, src: int, dst: int) -> str:
    proc = hosts.run(
        src, [sys.executable, "-c", CLIENT, hosts.address(dst)], stdout=subprocess.PIPE
    )
    out, _ = proc.communicate(timeout=30)
    return out.strip()


def root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_hosts_talk_cut_heal_and_leave_nothing() -> None:
    before = root_links()
    with hosts_or_skip(3) as hosts:
        assert root_links() == before, "nothing is added to the machine's own namespace"
        server = hosts.run(
            2, [sys.executable, "-u", "-c", SERVER, hosts.address(2)], stdout=subprocess.PIPE
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert connect(hosts, 1, 2) == "pong"
        assert connect(hosts, 3, 2) == "pong"
        hosts.cut(2)
        assert connect(hosts, 1, 2) in ("timeout", "TimeoutError", "OSError")
        hosts.heal(2)
        assert connect(hosts, 1, 2) == "pong"
        hosts.kill_host(2)
        assert hosts.pids(2) == []
        assert server.wait(timeout=10) != 0
        hosts.run(3, ["sleep", "600"])
        names = [*hosts.namespaces.values(), hosts.bridge_ns]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in names if n in listed], f"namespaces left: {listed}"
    assert root_links() == before
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 600" not in ps, "a host's process outlived close()"


def test_a_crashed_runs_namespaces_are_swept() -> None:
    if reason := netns_hosts.unavailable_reason():
        pytest.skip(reason)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is free now: a "crashed run"
    name = f"{netns_hosts.PREFIX}{dead.pid}-0-h1"
    subprocess.run(["ip", "netns", "add", name], check=True)
    left = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"])
    try:
        assert name in netns_hosts.sweep_stale()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name not in listed
        assert left.wait(timeout=10) == -9
    finally:
        left.kill()
        left.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_netem_delays_or_says_why() -> None:
    with hosts_or_skip(2) as hosts:
        try:
            hosts.netem(1, delay_ms=50, loss_pct=0)
        except netns_hosts.Unavailable as e:
            assert "netem" in str(e)
            pytest.skip(str(e))
        ping = hosts.run(
            1, ["ping", "-c", "1", "-W", "2", hosts.address(2)], stdout=subprocess.PIPE
        )
        out, _ = ping.communicate(timeout=30)
        assert "time=" in out and float(out.split("time=")[1].split()[0]) >= 45
