"""The hub's content store on disk: blobs, release trees, and the `current` pointer.

```
DATA_DIR/content/blobs/sha256/<hex>      every imported blob, written once (delta bases)
DATA_DIR/content/releases/<hex>/         one imported bundle's site tree: hard links to blobs
DATA_DIR/content/current -> releases/<hex>
```
Nothing a reader sees is ever half-written: a blob is hashed as it is copied and renamed into
place only when its hash and size match; a release tree is built under tmp/ and renamed whole;
`current` moves by renaming a new symlink over it. Blobs no kept release links (a link count
of one) go in `prune`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiorch.bundle.verify import BundleRefused, VerifiedBundle

CHUNK = 4 << 20


@dataclass(frozen=True)
class ContentStore:
    root: Path  # DATA_DIR/content

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob(sha256).is_file()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One import at a time, across threads and hub processes sharing the data dir;
        what an import left in tmp/ when its hub died is cleared first."""
        for folder in (self.blobs, self.releases, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                for stale in self.tmp.iterdir():
                    _remove(stale)
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def current_release(self) -> Path | None:
        """The release tree `current` points at, or None before the first import."""
        if not self.current.is_symlink():
            return None
        target = self.current.resolve()
        return target if target.parent == self.releases.resolve() and target.is_dir() else None

    def copy_blobs(self, bundle: VerifiedBundle) -> int:
        """Copy the blobs the store lacks out of the bundle, each hash re-checked as it is
        written (the media may have changed since verification); returns how many."""
        sizes = {f.sha256: f.size for f in bundle.manifest.files}
        missing = sorted(sha for sha in bundle.shipped() if not self.has_blob(sha))
        for sha in missing:
            self._copy_one(bundle, sha, sizes[sha])
        return len(missing)

    def _copy_one(self, bundle: VerifiedBundle, sha256: str, size: int) -> None:
        part = self.tmp / f"blob-{sha256}-{secrets.token_hex(4)}"
        digest, written = hashlib.sha256(), 0
        try:
            with bundle.open_blob(sha256) as src, part.open("xb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    written += len(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if digest.hexdigest() != sha256 or written != size:
                raise BundleRefused(
                    f"blob {sha256} changed while it was copied ({written} bytes, sha256 "
                    f"{digest.hexdigest()}): the media may be failing; nothing was imported"
                )
            part.chmod(0o444)  # release trees hard-link it: no one edits a blob in place
            os.replace(part, self.blob(sha256))
        except OSError as exc:
            raise BundleRefused(f"cannot copy blob {sha256}: {exc.strerror or exc}") from None
        finally:
            part.unlink(missing_ok=True)

    def build_release(self, bundle: VerifiedBundle) -> Path:
        """The bundle's site tree as hard links to its blobs, renamed into place whole."""
        final = self.releases / bundle.digest.removeprefix("sha256:")
        if final.is_dir():
            return final  # built by an earlier import of this same bundle
        work = self.tmp / f"release-{final.name}-{secrets.token_hex(4)}"
        work.mkdir()
        try:
            for entry in bundle.manifest.files:
                dest = work / entry.path
                if not dest.resolve().is_relative_to(work.resolve()):
                    raise BundleRefused(f"path escapes the site tree: {entry.path}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(self.blob(entry.sha256), dest)
            os.rename(work, final)
        except OSError as exc:
            raise BundleRefused(f"cannot lay out the site tree: {exc}") from None
        finally:
            _remove(work)
        return final

    def swap(self, release: Path) -> None:
        """Point `current` at `release` in one rename: readers see the old tree or the new."""
        link = self.tmp / f"current-{secrets.token_hex(4)}"
        link.symlink_to(release.relative_to(self.root), target_is_directory=True)
        os.replace(link, self.current)

    def prune(self, keep: Iterable[str]) -> None:
        """Remove releases not named in `keep` (digests), then blobs no release links."""
        kept = {digest.removeprefix("sha256:") for digest in keep}
        current = self.current_release()
        if current is not None:
            kept.add(current.name)
        for release in self.releases.iterdir():
            if release.name not in kept:
                _remove(release)
        for blob in self.blobs.iterdir():
            if blob.stat().st_nlink == 1:
                blob.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
