"""Which object directory a process trusts to read and write directly: one whose token file
it owns and nobody else can write. Another user's token (or one others can write) sends the
process over gRPC, with a warning that names the file; real files, no daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flame import errors
from flame.objects import ObjectStore

TOKEN = "0123456789abcdef"


def _store(directory: Path) -> ObjectStore:
    return ObjectStore(str(directory), TOKEN, rpc=lambda: None)


def test_our_private_token_file_means_the_same_machine(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    os.chmod(tmp_path / "token", 0o600)
    assert _store(tmp_path).local
    (tmp_path / "token").write_text("another head's token")
    assert not _store(tmp_path).local


def test_a_token_file_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    os.chmod(tmp_path / "token", 0o622)
    with pytest.warns(errors.FlameWarning, match=r"can be written by other users \(mode 622\)"):
        assert not _store(tmp_path).local


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_token_file_another_user_owns_is_not_trusted(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    os.chmod(token, 0o600)
    os.chown(token, 65534, -1)
    with pytest.warns(errors.FlameWarning, match=f"{token} belongs to uid 65534, not to uid 0"):
        store = _store(tmp_path)
    assert not store.local


def test_a_token_symlink_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text(TOKEN)
    os.chmod(real, 0o600)
    os.symlink(real, tmp_path / "token")
    assert not _store(tmp_path).local
