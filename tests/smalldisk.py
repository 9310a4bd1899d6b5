"""A small real filesystem that a test fills up and frees again (I/O; tests run as root).

    disk = SmallDisk(tmp_path / "state")       # a 2 MB tmpfs mounted there, mode 0700
    disk.fill()                                # a ballast file takes every free block: ENOSPC
    disk.free()                                # the ballast goes: room again
    disk.close()                               # unmount (lazily: a process may still hold a file)

A tmpfs is used because it needs no image file and no loop device; a test that cannot mount
one fails (it is not skipped).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

BALLAST = ".ballast"


class SmallDisk:
    """A tmpfs of `size` mounted at `path` (created when missing)."""

    def __init__(self, path: Path, size: str = "2m") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            msg = f"cannot mount a tmpfs at {path} (tests run as root): {proc.stderr.strip()}"
            raise RuntimeError(msg)
        self.mounted = True

    @property
    def ballast(self) -> Path:
        return self.path / BALLAST

    def fill(self) -> None:
        """Write a ballast file until the filesystem refuses another byte."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 1 << 12, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        """Delete the ballast: the filesystem has room again."""
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()

    def is_full(self) -> bool:
        st = os.statvfs(self.path)
        return st.f_bavail == 0

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False
