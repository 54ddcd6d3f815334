"""A slow, lossy network on namespaced hosts (#13): with `tc netem` adding 50 ms of delay and
1 % loss to everything the node hosts send, 2,000 tasks all come back right and no node is
ever taken for lost. Skips, saying why, where the kernel has no netem."""

from __future__ import annotations

from pathlib import Path

import netns_hosts
import pytest
from _netns_cluster import NetCluster
from netns_hosts import hosts_or_skip

N = 2000
# The defaults' ratio (heartbeat 1 s, node timeout 5 s), shortened: a spurious loss would
# show within the run.
CONFIG = "heartbeat_ms = 500\nnode_timeout_ms = 2500\n"


def test_2000_tasks_over_a_slow_lossy_network_lose_no_node(tmp_path: Path) -> None:
    with hosts_or_skip(3) as hosts:
        try:
            for host in (2, 3):
                hosts.netem(host, delay_ms=50, loss_pct=1)
        except netns_hosts.Unavailable as e:
            pytest.skip(str(e))
        c = NetCluster(hosts, tmp_path, {"n2": 2, "n3": 3}, CONFIG, slots=2)
        try:
            c.start_client(1)
            c.wait_alive(["n2", "n3"])
            assert c.ask(f"run {N} fast") == N
            assert c.ask("results 50") == [i * i for i in range(N)]
            assert c.ask("alive") == ["n2", "n3"]
            head = c.log("head")
            assert "missed its heartbeats" not in head and "node left" not in head, head
            for node in ("n2", "n3"):
                assert "registering again" not in c.log(node), c.log(node)
        finally:
            c.stop()
