"""The client side of #11 end to end: the embedded cluster needs no configuration and
admits only this process; executors hold a node token, never the admin token;
``flame login`` checks a token and keeps it 0600; a local ``flame-daemon start`` is found
through its ``admin.token``; a node joins a TLS head with a join token and keeps its
certificate for restarts.

Several of these need the head's side of #11 (the auth interceptor, ``Discover``,
``JoinNode``, ``admin.token``, TLS); they are marked ``server_side``."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _procs import daemon_command, free_port, start_daemon, stop_daemon

import flame
from flame import _core, _credentials, api


@flame.service
def whoami(_: int) -> str:
    import os

    return os.environ.get("FLAME_TOKEN", "")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FLAME_TOKEN", "FLAME_ADDRESS", "FLAME_CA_FILE", "FLAME_CERT_FILE")
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


def test_the_embedded_cluster_needs_no_configuration_and_hands_executors_a_node_token(
    cluster: str,
) -> None:
    token = api.runtime().token
    assert token and token.startswith("flame_user_")
    assert os.environ.get("FLAME_TOKEN") != token  # only in memory
    seen = whoami(1).result(timeout=60)
    assert seen.startswith("flame_node_"), seen
    assert token not in seen
    url = flame.dashboard_url()
    assert url is not None and url.endswith(f"?token={token}")
    # This process's own connections find the token by themselves.
    with flame.connect(cluster) as conn:
        assert conn.client_id > 0


def test_a_connection_without_the_token_is_refused(
    cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # server_side
    monkeypatch.delenv("FLAME_TOKEN", raising=False)
    with pytest.raises(flame.AuthenticationError) as e:
        _core.Connection(cluster, 5.0, "intruder")
    with pytest.raises(flame.AuthenticationError) as e:
        _core.Connection(
            cluster, 5.0, "intruder", token="flame_user_1_" + "0" * 64 + "_" + "0" * 64
        )
    assert "flame login" in str(e.value)


def _flame(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flame.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(home, **extra),
    )


def test_flame_login_checks_the_token_and_writes_a_0600_file(cluster: str, tmp_path: Path) -> None:
    token = api.runtime().token or ""
    done = _flame(tmp_path, "login", cluster, "--token", token)
    assert done.returncode == 0, done.stderr
    path = tmp_path / ".flame" / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert token in path.read_text()
    assert "logged in" in done.stdout
    # The CLI then finds the token there.
    done = _flame(tmp_path, "status", "--address", cluster)
    assert done.returncode == 0, done.stderr


def test_flame_login_refuses_a_wrong_token(cluster: str, tmp_path: Path) -> None:  # server_side
    wrong = "flame_user_77_" + "1" * 64 + "_" + "2" * 64
    done = _flame(tmp_path, "login", cluster, "--token", wrong)
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    assert "refused the token" in done.stderr
    assert not (tmp_path / ".flame" / "credentials").exists()


def test_a_cli_command_without_a_token_says_what_to_do(tmp_path: Path) -> None:
    """No token anywhere: not given, no FLAME_TOKEN, no credentials file, and no admin.token
    this user can read (removed here, as for another OS user, who cannot read it)."""
    port = free_port()
    state = tmp_path / "state"
    daemon = start_daemon("head", "--port", str(port), "--state-dir", str(state), port=port)
    try:
        (state / "admin.token").unlink()
        done = _flame(tmp_path, "status", "--address", f"http://127.0.0.1:{port}")
        assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
        assert "flame login" in done.stderr and "FLAME_TOKEN" in done.stderr, done.stderr
    finally:
        stop_daemon(daemon)


def test_a_local_daemon_is_found_through_its_admin_token(tmp_path: Path) -> None:  # server_side
    port = free_port()
    state = tmp_path / "state"
    daemon = start_daemon(
        "start",
        "--port",
        str(port),
        "--state-dir",
        str(state),
        "--slots",
        "1",
        "--no-http",
        port=port,
    )
    try:
        assert stat.S_IMODE((state / "admin.token").stat().st_mode) == 0o600
        script = (
            "import flame; from flame import _credentials as c;"
            f"print(c.lookup('http://127.0.0.1:{port}').source);"
            f"flame.init('http://127.0.0.1:{port}');"
            "print(flame.cluster_info()['nodes'][0]['name'])"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(tmp_path),
        )
        assert done.returncode == 0, done.stderr
        source, _node = done.stdout.split()
        assert source == str(state / "admin.token")
    finally:
        stop_daemon(daemon)


def _join_token(text: str) -> str:
    found = re.search(r"flame_join_\d+_[0-9a-f]{64}_[0-9a-f]{64}", text)
    assert found, f"no join token in: {text}"
    return found.group(0)


def test_a_node_joins_a_tls_head_with_a_join_token_and_restarts_without_it(
    tmp_path: Path,
) -> None:  # server_side
    port = free_port()
    state = tmp_path / "head"
    head = subprocess.Popen(
        [
            *daemon_command(),
            "head",
            "--host",
            "127.0.0.1",
            "--tls",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--no-http",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    node_dir = tmp_path / "node"
    node = None
    try:
        printed = ""
        deadline = time.monotonic() + 30
        while "flame_join_" not in printed and time.monotonic() < deadline:
            line = head.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            printed += line
        join = _join_token(printed)
        address = f"https://127.0.0.1:{port}"

        def start_node(*extra: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [
                    *daemon_command(),
                    "node",
                    "--head",
                    address,
                    "--state-dir",
                    str(node_dir),
                    "--bind",
                    "127.0.0.2",
                    "--name",
                    "joined",
                    "--slots",
                    "1",
                    *extra,
                ],
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                env=_env(tmp_path),
            )

        node = start_node("--join-token", join)
        admin = (state / "admin.token").read_text().strip()
        with flame.connect(address, token=admin, timeout=10) as conn:
            assert conn._conn.ca_pem and "BEGIN CERTIFICATE" in conn._conn.ca_pem
            deadline = time.monotonic() + 30
            while not any(
                n["name"] == "joined" and n["alive"] for n in conn.cluster_info()["nodes"]
            ):
                assert time.monotonic() < deadline, "the node never joined"
                assert node.poll() is None, node.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.2)
        for name in ("node.pem", "node.key", "ca.pem"):
            assert stat.S_IMODE((node_dir / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(node_dir.stat().st_mode) == 0o700
        stop_daemon(node)
        # A restart uses the kept certificate: no token needed.
        node = start_node()
        time.sleep(1.0)
        assert node.poll() is None, node.stderr.read()  # type: ignore[union-attr]
        # A wrong join token on a fresh state dir is refused with the head's message.
        fresh = subprocess.run(
            [
                *daemon_command(),
                "node",
                "--head",
                address,
                "--state-dir",
                str(tmp_path / "n2"),
                "--join-token",
                "flame_join_99_" + "1" * 64 + "_" + join.rsplit("_", 1)[1],
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(tmp_path),
        )
        assert fresh.returncode == 1
        assert "token" in fresh.stderr and "not authenticated" in fresh.stderr, fresh.stderr
    finally:
        if node is not None and node.poll() is None:
            stop_daemon(node)
        head.terminate()
        head.communicate(timeout=30)


def test_the_credentials_module_is_what_connect_uses(cluster: str) -> None:
    found = _credentials.lookup(cluster)
    assert found.token == api.runtime().token
    assert found.source == "this process's embedded cluster"
