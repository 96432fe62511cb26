"""Where a blob's bytes lie: ``blobs/sha256/<hex>``, or a range of the concatenated parts.

A bundle made with ``--part-size`` has no ``blobs/``: the shipped blobs, in manifest order, are
concatenated and cut into ``parts/part-NNNN``. Readers seek blob bytes straight out of the parts,
so nothing is joined and no part is ever deleted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiorch.bundle import unpack
from aiorch.bundle.manifest import Manifest, Part

BLOBS = "blobs/sha256"
PARTS = "parts"
CHUNK = 4 << 20


def blob_path(root: Path, sha256: str) -> Path:
    return root / BLOBS / sha256


def part_name(index: int) -> str:
    return f"part-{index:04d}"


@dataclass(frozen=True)
class Span:
    """One blob's place in the concatenated parts: ``size`` bytes from ``offset``."""

    offset: int
    size: int


def spans(manifest: Manifest) -> dict[str, Span]:
    """Each shipped blob's offset in the concatenation, in the order create wrote them."""
    laid = unpack.spans(manifest.blobs(), manifest.omitted)
    return {sha: Span(offset, size) for sha, (offset, size) in laid.items()}


class PartsReader(io.RawIOBase):
    """A read-only stream over ``size`` bytes from ``offset`` of the parts laid end to end."""

    def __init__(self, root: Path, parts: tuple[Part, ...], span: Span) -> None:
        super().__init__()
        self._root, self._parts = root, parts
        self._pos, self._end = span.offset, span.offset + span.size
        self._fh: BinaryIO | None = None
        self._fh_range = (0, 0)

    def readable(self) -> bool:
        return True

    def _open_at(self, pos: int) -> BinaryIO:
        start, stop = self._fh_range
        if self._fh is not None and start <= pos < stop:
            return self._fh
        if self._fh is not None:
            self._fh.close()
        start = 0
        for part in self._parts:
            if pos < start + part.size:
                self._fh = (self._root / PARTS / part.name).open("rb")
                self._fh_range = (start, start + part.size)
                return self._fh
            start += part.size
        raise OSError(f"offset {pos} lies beyond the last part")

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._end:
            return 0
        fh = self._open_at(self._pos)
        start, stop = self._fh_range
        want = min(len(buffer), self._end - self._pos, stop - self._pos)
        fh.seek(self._pos - start)
        got = fh.readinto(memoryview(buffer)[:want])  # type: ignore[attr-defined]
        if not got:
            raise OSError(f"a part ends early at offset {self._pos}")
        self._pos += got
        return int(got)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def open_blob(root: Path, manifest: Manifest, sha256: str) -> BinaryIO:
    """The blob's bytes, from ``blobs/`` or out of the parts; KeyError when not shipped."""
    if manifest.parts is None:
        if sha256 not in manifest.shipped():
            raise KeyError(sha256)
        return blob_path(root, sha256).open("rb")
    span = spans(manifest)[sha256]
    return io.BufferedReader(PartsReader(root, manifest.parts, span), CHUNK)
