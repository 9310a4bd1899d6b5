"""Private files: the state dir is 0700 and every file healer writes in it 0600 (I/O).

The modes are set explicitly (mkdir/open with the mode, then chmod/fchmod), because the mode
given to mkdir(2) and open(2) is masked by the umask: a helper that only passed 0o700 would
still get 0o700 under umask 022, but a file opened with the default 0o666 would come out 0644,
and nothing stops a caller's umask being 000. An existing dir or file is tightened too, so a
state dir left by an older healer (0755, files 0644) becomes private at the next start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Literal, TextIO, overload

DIR_MODE = 0o700
FILE_MODE = 0o600

# open()'s modes as os.open flags; O_CLOEXEC so the app healer starts never inherits a lock
_FLAGS = {
    "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
    "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and leave it 0700, whatever the umask; returns it.

    Only `path` itself is tightened: its parents are the user's. A shared, world-writable
    directory (/tmp: the sticky bit) is refused rather than locked away from everyone else.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) == DIR_MODE:
        return path
    if st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH:
        # an OSError, so every caller's "cannot create the state directory: <strerror>" reads right
        raise PermissionError(1, "a shared, world-writable directory: name a directory of healer's own", str(path))
    os.chmod(path, DIR_MODE)
    return path


def private_fd(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """os.open(`path`, `flags`) with the file 0600 whether it was created now or existed."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


@overload
def open_private(path: Path, mode: Literal["a+"]) -> TextIO: ...
@overload
def open_private(path: Path, mode: Literal["ab"]) -> BinaryIO: ...
def open_private(path: Path, mode: Literal["a+", "ab"]) -> TextIO | BinaryIO:
    """open(`path`, `mode`) for a file that is 0600 whatever the umask."""
    fd = private_fd(path, _FLAGS[mode])
    try:
        return open(fd, "a+") if mode == "a+" else open(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def make_private(path: Path) -> None:
    """Create `path` empty if missing, and leave it 0600."""
    os.close(private_fd(path, os.O_WRONLY | os.O_CREAT))
