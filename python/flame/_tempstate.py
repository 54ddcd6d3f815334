"""The embedded cluster's temporary state directory, and the sweep of those left behind.

``flame.init()`` without a ``state_dir`` keeps the embedded cluster's state in a fresh
``$TMPDIR/flame-*`` directory and removes it at shutdown. A process killed by SIGKILL cannot
remove anything, so each such directory holds an owner lock: a file ``owner.lock`` that its
process keeps ``flock``-ed while it lives (the kernel drops the lock when the process dies,
however it dies; a recycled pid cannot fake it). Every embedded start first sweeps the
``flame-*`` directories whose lock nobody holds. Directories without the lock file (made by
anything else) are never touched.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "flame-"
LOCK = "owner.lock"


class TempState:
    """A fresh state directory under ``root`` (default: the temp dir), locked by this process
    until :meth:`remove`."""

    def __init__(self, root: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix=PREFIX, dir=root)
        try:
            # Locked under another name, then renamed: a sweeper never sees an unlocked lock.
            fd = os.open(os.path.join(self.path, f".{LOCK}.new"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.rename(os.path.join(self.path, f".{LOCK}.new"), os.path.join(self.path, LOCK))
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        self._fd: int | None = fd  # not inherited by executors (PEP 446)

    def remove(self) -> None:
        """Delete the directory, then let the lock go; idempotent."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sweep(root: str | None = None) -> list[str]:
    """Remove the ``flame-*`` state directories under ``root`` (default: the temp dir) whose
    owner is gone; returns them. Never fails: what cannot be removed is left."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if path.is_symlink() or not path.is_dir():
                continue
            fd = os.open(path / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # not one of ours, or gone already
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its owner is alive
        try:
            # Removed while locked: a second sweeper's flock fails meanwhile, so it skips.
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        finally:
            os.close(fd)
    return removed
