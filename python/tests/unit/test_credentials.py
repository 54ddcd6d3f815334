"""The client's credential lookup and the credentials file (#11): order of the sources,
the file's mode (0600 written, group/world-readable refused), entries keyed by address."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import flame
from flame import _credentials

TOKEN_A = "flame_user_2_" + "a" * 64 + "_" + "f" * 64
TOKEN_B = "flame_user_3_" + "b" * 64 + "_" + "f" * 64


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME and no credentials in the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("FLAME_TOKEN", "FLAME_CA_FILE", "FLAME_CERT_FILE", "FLAME_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    # No head anywhere: a loopback lookup's Discover must not find one by accident.
    monkeypatch.setattr(flame._core, "discover", _no_head, raising=False)
    return tmp_path


def _no_head(address: str, timeout: float = 5.0) -> dict:
    raise flame.ConnectionError(f"nothing at {address}")


def test_written_file_is_0600_in_a_0700_dir_and_keeps_other_entries(home: Path) -> None:
    path = _credentials.write_entry("127.0.0.1:8080", TOKEN_A, None)
    assert path == home / ".flame" / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    _credentials.write_entry(
        "https://Head.example:9000/", TOKEN_B, "-----BEGIN CERTIFICATE-----\nx\n"
    )
    _credentials.write_entry("http://127.0.0.1:8080", TOKEN_B, None)  # replaces the first
    entries = _credentials.read_file()
    assert entries == {
        "http://127.0.0.1:8080": {"token": TOKEN_B},
        "https://head.example:9000": {
            "token": TOKEN_B,
            "ca_pem": "-----BEGIN CERTIFICATE-----\nx\n",
        },
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_file_others_may_read_is_refused_naming_it_and_the_fix(home: Path, mode: int) -> None:
    path = _credentials.write_entry("127.0.0.1:8080", TOKEN_A, None)
    os.chmod(path, mode)
    with pytest.raises(flame.AuthenticationError) as e:
        _credentials.lookup("127.0.0.1:8080")
    assert str(path) in str(e.value)
    assert f"chmod 600 {path}" in str(e.value)
    with pytest.raises(flame.AuthenticationError):
        flame.connect("127.0.0.1:8080", timeout=1.0)


def test_lookup_order_explicit_then_env_then_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _credentials.lookup("127.0.0.1:8080") == _credentials.Found()
    _credentials.write_entry("127.0.0.1:8080", TOKEN_A, None)
    found = _credentials.lookup("http://127.0.0.1:8080/")
    assert found.token == TOKEN_A
    assert "credentials" in found.source and "[http://127.0.0.1:8080]" in found.source
    monkeypatch.setenv("FLAME_TOKEN", TOKEN_B)
    assert _credentials.lookup("127.0.0.1:8080") == _credentials.Found(
        TOKEN_B, None, "$FLAME_TOKEN"
    )
    assert _credentials.lookup("127.0.0.1:8080", token=TOKEN_A).source == "token="
    # Another address has no entry.
    monkeypatch.delenv("FLAME_TOKEN")
    assert _credentials.lookup("127.0.0.1:9999").token is None


def test_the_ca_comes_from_ca_then_the_env_then_the_entry(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_ca = "-----BEGIN CERTIFICATE-----\nentry\n-----END CERTIFICATE-----\n"
    _credentials.write_entry("https://head:8080", TOKEN_A, entry_ca)
    assert _credentials.lookup("https://head:8080").ca_pem == entry_ca
    ca_file = home / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\nfile\n-----END CERTIFICATE-----\n")
    assert "file" in (_credentials.lookup("https://head:8080", ca=str(ca_file)).ca_pem or "")
    # $FLAME_CA_FILE is read (and checked) by the native side: nothing is passed down.
    monkeypatch.setenv("FLAME_CA_FILE", str(ca_file))
    assert _credentials.lookup("https://head:8080").ca_pem is None
    with pytest.raises(flame.InvalidArgumentError, match="cannot read the CA file"):
        _credentials.lookup("https://head:8080", ca=str(home / "missing.pem"))


def test_a_loopback_head_s_admin_token_is_found_through_discover(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = home / "state"
    state.mkdir()
    (state / "admin.token").write_text(TOKEN_A + "\n")
    asked = []

    def discover(address: str, timeout: float = 5.0) -> dict:
        asked.append(address)
        return {"tls": False, "ca_fingerprint": "", "state_dir": str(state), "version": "x"}

    monkeypatch.setattr(flame._core, "discover", discover, raising=False)
    found = _credentials.lookup("http://127.0.0.1:8080")
    assert found.token == TOKEN_A and found.source == str(state / "admin.token")
    # Not for a remote head, and not when an earlier source has a token.
    assert _credentials.lookup("http://10.1.2.3:8080").token is None
    monkeypatch.setenv("FLAME_TOKEN", TOKEN_B)
    assert _credentials.lookup("http://localhost:8080").token == TOKEN_B
    assert asked == ["http://127.0.0.1:8080"]
    # A head that does not say its state dir (not on this machine): nothing.
    monkeypatch.delenv("FLAME_TOKEN")
    (state / "admin.token").unlink()
    assert _credentials.lookup("http://[::1]:8080").token is None


def test_addresses_are_keyed_and_classified() -> None:
    assert _credentials.canonical("Head:8080/") == "http://head:8080"
    assert _credentials.canonical("HTTPS://h:1") == "https://h:1"
    for a in ("127.0.0.1:1", "http://127.4.5.6:1", "localhost:1", "http://[::1]:1"):
        assert _credentials.is_loopback(a), a
    for a in ("10.0.0.1:1", "https://head:1", "http://[fe80::1]:1"):
        assert not _credentials.is_loopback(a), a
