"""The object file format from the Python side: the same header bytes as the Rust side
(flame_core::objects::format), atomic writes, zero-copy maps, and every damage refused."""

from __future__ import annotations

import os

import pytest

from flame import _object_file as f


def test_the_header_matches_the_rust_writer() -> None:
    # The same bytes as format::tests::the_python_writer_makes_the_same_header.
    h = f.header(0x0102030405060708, 0x10)
    assert len(h) == f.HEADER_BYTES
    assert h[:28].hex() == "464c414d454f423108070605040302011000000000000000f6ac9f58"


def test_write_then_map_round_trip_zero_copy(tmp_path) -> None:
    d = str(tmp_path)
    assert f.write_object(d, 0x300000001, [b"hello ", memoryview(b"world")]) == 11
    view = f.map_object(d, 0x300000001)
    assert bytes(view) == b"hello world"
    assert view.readonly
    assert os.stat(tmp_path / "0000000300000001").st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["0000000300000001"], "no temporary left"
    with pytest.raises(FileExistsError):
        f.write_object(d, 0x300000001, [b"again"])
    assert bytes(f.map_object(d, 0x300000001)) == b"hello world", "never replaced"
    f.write_object(d, 0x300000002, [])
    assert bytes(f.map_object(d, 0x300000002)) == b""


def test_damaged_files_are_refused_naming_the_object(tmp_path) -> None:
    d = str(tmp_path)
    f.write_object(d, 0x300000001, [b"x" * 100])
    path = tmp_path / "0000000300000001"
    os.truncate(path, 120)
    with pytest.raises(f.DamagedObjectError, match=r"0x300000001 is damaged.*truncated"):
        f.map_object(d, 0x300000001)
    f.write_object(d, 0x300000002, [b"y" * 10])
    other = tmp_path / "0000000300000002"
    data = bytearray(other.read_bytes())
    data[17] ^= 1
    other.write_bytes(bytes(data))
    with pytest.raises(f.DamagedObjectError, match="checksum"):
        f.map_object(d, 0x300000002)
    os.rename(tmp_path / "0000000300000002", tmp_path / "0000000300000003")
    (tmp_path / "0000000300000004").write_bytes(b"not an object")
    with pytest.raises(f.DamagedObjectError, match="less than an object header"):
        f.map_object(d, 0x300000004)
    with pytest.raises(FileNotFoundError):
        f.map_object(d, 0x300000009)


def test_files_others_could_write_are_refused(tmp_path) -> None:
    d = str(tmp_path)
    f.write_object(d, 0x300000001, [b"x"])
    os.chmod(tmp_path / "0000000300000001", 0o646)
    with pytest.raises(PermissionError, match="can be written by other users"):
        f.map_object(d, 0x300000001)
    os.symlink(tmp_path / "0000000300000001", tmp_path / "0000000300000005")
    with pytest.raises(PermissionError, match="symbolic link"):
        f.map_object(d, 0x300000005)


def test_many_parts_are_written_in_order(tmp_path) -> None:
    # More buffers than one pwritev call takes (1024), some empty.
    parts = [bytes([i % 251]) * (i % 3) for i in range(3000)]
    assert f.write_object(str(tmp_path), 0x300000003, parts) == sum(map(len, parts))
    assert bytes(f.map_object(str(tmp_path), 0x300000003)) == b"".join(parts)


_FULL_TMPFS = """
import errno, sys
from flame import _object_file as f
try:
    f.write_object(sys.argv[1], 0x300000004, [bytes(2 << 20)])
except OSError as e:
    sys.exit(0 if e.errno == errno.ENOSPC else 3)
sys.exit(4)
"""


def test_a_full_memory_dir_is_an_error_not_a_crash(tmp_path) -> None:
    # A tmpfs of 1 MiB (in a private mount namespace) and a 2 MiB object: an OSError
    # (ENOSPC) the caller turns into FlameError, not SIGBUS on a page of a mapping.
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    script = tmp_path / "write.py"
    script.write_text(_FULL_TMPFS)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = f'mount -t tmpfs -o size=1m tmpfs "{mnt}" && exec "{sys.executable}" "{script}" "{mnt}"'
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=1m tmpfs "{mnt}"'],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], env=env, timeout=60)
    assert done.returncode == 0, f"exit status {done.returncode} (-7 is SIGBUS)"
