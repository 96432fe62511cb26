"""Where the lab keeps what it makes outside podman, and the locks that guard it.

Everything lives under one state directory (``$AIORCH_LAB_DIR``, default
``/var/lib/aiorch-lab``) so nothing lands in the repository and ``down`` knows
exactly which files are its own.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/aiorch-lab")


def state_dir() -> Path:
    """The lab's state directory; callers create what they write into it."""
    return Path(os.environ.get("AIORCH_LAB_DIR", DEFAULT_STATE_DIR))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing).

    The lock file may be deleted by the holder (``down`` removes the lab's whole
    directory), so after taking the lock we check that the path still names the
    inode we locked and start over if not; otherwise two callers could each
    hold a lock on a different file.
    """
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield
                return
        finally:
            os.close(fd)
