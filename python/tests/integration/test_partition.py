"""A node cut off mid-run on namespaced hosts (#13): the head re-runs its tasks on the other
node, the cut-off node fences itself (its executors are gone while the link is still down),
rejoins when the link heals, and every task's future resolves once with the right value —
exactly-once results, at-least-once execution. And a client cut off: back within its lease it
resumes with nothing lost; back after it, its futures fail with an error naming the lease."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from _netns_cluster import NetCluster
from netns_hosts import hosts_or_skip

N = 200
NODE_TIMEOUT_S = 2.0
CONFIG = f"heartbeat_ms = 250\nnode_timeout_ms = {int(NODE_TIMEOUT_S * 1000)}\n"


def wait_for(what: str, check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `check()` is true; fails naming `what` after `timeout`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what} within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_node_cut_off_fences_itself_rejoins_and_no_result_is_doubled(tmp_path: Path) -> None:
    with hosts_or_skip(3) as hosts:
        c = NetCluster(hosts, tmp_path, {"n2": 2, "n3": 3}, CONFIG, slots=3)
        try:
            c.start_client(1)
            c.wait_alive(["n2", "n3"])
            assert c.ask(f"run {N}") == N
            # Both nodes busy: host 3 runs executors and some tasks are done.
            wait_for("n3 runs tasks", lambda: c.executors_in(3) and len(c.marks()) > 20, 60)
            on_n3 = set(c.executors_in(3))

            hosts.cut(3)
            # Fenced: every executor of the cut-off node stops while the link is down (the
            # head cannot tell it anything now), soon after the node timeout.
            fenced = wait_for("n3's executors stop", lambda: not c.executors_in(3), 15)
            assert "fencing" in c.log("n3"), c.log("n3")
            wait_for("the head declares n3 lost", lambda: c.ask("alive") == ["n2"], 15)
            # The work goes on, on n2 alone.
            done = c.ask("done")
            wait_for("tasks finish on n2", lambda: c.ask("done") > done + 10, 30)  # type: ignore[operator]

            hosts.heal(3)
            rejoined = wait_for("n3 rejoins", lambda: c.ask("alive") == ["n2", "n3"], 30)
            results = c.ask("results 60")
            assert results == [i * i for i in range(N)], results
            runs = Counter(x for x, _ in c.marks())
            assert set(runs) == set(range(N)), "every task ran"
            again = sum(1 for n in runs.values() if n > 1)
            assert not set(c.executors_in(3)) & on_n3, "an old executor survived"
            print(f"fenced {fenced:.1f} s after the cut, rejoined {rejoined:.1f} s after the "
                  f"heal; {again} tasks ran twice")  # fmt: skip
        finally:
            c.stop()


def test_a_client_cut_off_shorter_than_its_lease_resumes_and_loses_nothing(
    tmp_path: Path,
) -> None:
    with hosts_or_skip(3) as hosts:
        config = CONFIG + "client_lease_ms = 8000\n"
        c = NetCluster(hosts, tmp_path, {"n3": 3}, config, slots=2)
        try:
            c.start_client(2)
            c.wait_alive(["n3"])
            assert c.ask("run 40") == 40
            wait_for("tasks start", lambda: len(c.marks()) > 2, 30)
            hosts.cut(2)
            time.sleep(2)  # the cut itself, well within the lease
            hosts.heal(2)
            assert c.ask("results 60") == [i * i for i in range(40)]
            assert "closing a session whose client is gone" not in c.log("head")
        finally:
            c.stop()


def test_a_client_cut_off_longer_than_its_lease_gets_an_error_naming_the_lease(
    tmp_path: Path,
) -> None:
    with hosts_or_skip(3) as hosts:
        config = CONFIG + "client_lease_ms = 2000\n"
        c = NetCluster(hosts, tmp_path, {"n3": 3}, config, slots=2)
        try:
            c.start_client(2)
            c.wait_alive(["n3"])
            assert c.ask("run 400") == 400  # ~70 s of work: most is left when it closes
            wait_for("tasks start", lambda: len(c.marks()) > 2, 30)
            hosts.cut(2)
            # The head notices the client gone within about its lease (HTTP/2 pings) and
            # closes its session a lease later.
            closed = wait_for(
                "the head closes the cut-off client's session",
                lambda: "closing a session whose client is gone" in c.log("head"),
                20,
            )
            hosts.heal(2)
            answer = c.ask("results 60")
            assert isinstance(answer, dict), f"results after the lease ran out: {answer}"
            assert answer["error"] == "SessionError", answer
            assert "client_lease_ms = 2000" in answer["message"], answer
            print(f"session closed {closed:.1f} s after the cut: {answer['message']}")
        finally:
            c.stop()
