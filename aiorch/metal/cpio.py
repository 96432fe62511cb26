"""A deterministic initramfs: newc cpio entries in path order, owner root, mtime 0, gzip'd
with no name or time in its header, so the same tree gives the same bytes (and digest).

Written here rather than by cpio(1) so that nothing of the build machine (owners, times,
inode numbers, umask) leaks into the image, and so a device node needs no root.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from io import BufferedIOBase
from pathlib import Path

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One member: a directory, a file (data), a symlink (target) or a char device (rdev)."""

    mode: int  # full st_mode: type and permission bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def directory(cls) -> Entry:
        return cls(stat.S_IFDIR | 0o755)

    @classmethod
    def file(cls, data: bytes, perm: int = 0o644) -> Entry:
        return cls(stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, target: str) -> Entry:
        return cls(stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def chardev(cls, major: int, minor: int, perm: int = 0o600) -> Entry:
        return cls(stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _member(out: BufferedIOBase, ino: int, name: str, entry: Entry) -> None:
    raw = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, *entry.rdev, len(raw), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out.write(header + raw + _pad(len(header) + len(raw)))
    out.write(entry.data + _pad(len(entry.data)))


def with_parents(entries: Mapping[str, Entry]) -> dict[str, Entry]:
    """`entries` plus a directory entry for every parent that lacks one."""
    full = dict(entries)
    for name in entries:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            full.setdefault("/".join(parts[:i]), Entry.directory())
    return full


def write_initramfs(entries: Mapping[str, Entry], dest: Path) -> None:
    """Write `entries` (relative paths, no leading slash) as a gzip'd newc cpio at `dest`."""
    full = with_parents(entries)
    tmp = dest.with_name(dest.name + ".part")
    with tmp.open("wb") as raw, gzip.GzipFile("", "wb", 6, raw, mtime=0) as out:
        for ino, name in enumerate(sorted(full), start=1):
            _member(out, ino, name, full[name])
        _member(out, 0, TRAILER, Entry(0))
    tmp.replace(dest)
