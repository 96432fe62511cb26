"""Image archives from the hub, cached in the state dir and loaded into podman.

There is no registry: the hub serves each image as a `podman save` docker-archive, named by
the sha256 of the file. The agent keeps the archives its desired workloads use under
`state_dir/images/<hex>.tar` (so a removed image or a reboot needs no new download), and
after a verified load `<hex>.json` names the image id it became. Containers are created from
that id, never from the ref, so a tag moved by someone else can't change what runs.

Fetching and loading run on one background thread: a multi-GB download must not hold up
check-ins (the hub would call the agent offline). A round waits for it only briefly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path

from edge_agent.client import DigestMismatch, HubUnavailable
from edge_agent.contract.image import holds
from edge_agent.contract.workload import Image
from edge_agent.digest import sha256_file
from edge_agent.state import read_json, write_private
from edge_agent.workloads.podman import Podman

log = logging.getLogger("aiorch.agent.workloads")

Fetch = Callable[[str, Path], None]  # (digest, dest): download the archive to dest, verified

RETRY_BASE_S = 10.0
RETRY_MAX_S = 300.0


class ImageError(Exception):
    """The archive can't become the image asked for; the message says why, in one line."""


@dataclass(frozen=True)
class Readiness:
    state: str  # "ready", "pending" or "failed"
    reason: str | None = None
    image_id: str | None = None


@dataclass
class _Failure:
    reason: str
    transient: bool  # the hub was away: pending, not failed
    retry_at: float
    attempts: int


class ImageCache:
    def __init__(
        self,
        directory: Path,
        podman: Podman,
        fetch: Fetch | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dir = directory
        self.podman = podman
        self.fetch = fetch
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: dict[str, Future[str]] = {}
        self._failures: dict[str, _Failure] = {}

    def archive(self, image: Image) -> Path:
        return self.dir / f"{image.hex}.tar"

    def loaded_id(self, image: Image, present: set[str]) -> str | None:
        """The image id this digest was loaded as, if it is still in podman's storage. The
        record outlives the archive, so rolling back to an image still loaded is instant."""
        path = self.dir / f"{image.hex}.json"
        index = read_json(path)
        image_id = index.get("image_id") if index else None
        if image_id in present:
            return str(image_id)
        path.unlink(missing_ok=True)  # the image was removed: load it again
        return None

    def resolve(self, image: Image, present: set[str], deadline: float) -> Readiness:
        """Ready with its image id, or pending/failed with a reason. Starts (or waits until
        `deadline` for) the fetch-and-load job; a failed one is retried with backoff."""
        job = self._jobs.get(image.digest)  # (while one runs, its record is being written)
        if job is None and (image_id := self.loaded_id(image, present)):
            return Readiness("ready", image_id=image_id)
        if job is None:
            failure = self._failures.get(image.digest)
            if failure is not None and self.clock() < failure.retry_at:
                return _failed(failure)
            job = self._start(image)
        wait_futures([job], timeout=max(0.0, deadline - self.clock()))
        if not job.done():
            return Readiness("pending", f"fetching and loading image {image.digest[:19]}")
        del self._jobs[image.digest]
        try:
            image_id = job.result()
        except Exception as exc:
            return _failed(self._failed(image, exc))
        self._failures.pop(image.digest, None)
        return Readiness("ready", image_id=image_id)

    def prune(self, keep: set[str]) -> None:
        """Drop the archives, finished jobs and failures of digests no desired workload uses
        any more (an archive is as big as its image; the image itself stays loaded)."""
        for digest, job in list(self._jobs.items()):
            if digest not in keep and job.done():
                del self._jobs[digest]
        for digest in list(self._failures):
            if digest not in keep:
                del self._failures[digest]
        busy = keep | set(self._jobs)
        for path in self.dir.glob("*.tar"):
            if f"sha256:{path.stem}" not in busy:
                path.unlink(missing_ok=True)
        if not self._jobs:  # downloads cut short by a crash of the agent
            for path in self.dir.glob(".*.part"):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, image: Image) -> Future[str]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiorch-images")
        job = self._pool.submit(self._fetch_and_load, image)
        self._jobs[image.digest] = job
        return job

    def _failed(self, image: Image, exc: Exception) -> _Failure:
        previous = self._failures.get(image.digest)
        attempts = previous.attempts + 1 if previous else 1
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempts - 1))
        transient = isinstance(exc, HubUnavailable)
        what = "waiting for the hub to serve image" if transient else "image"
        reason = f"{what} {image.digest[:19]}: {_one_line(exc)}"
        log.warning("%s (retry in %.0fs)", reason, delay)
        failure = _Failure(reason, transient, self.clock() + delay, attempts)
        self._failures[image.digest] = failure
        return failure

    def _fetch_and_load(self, image: Image) -> str:
        """Runs on the worker thread: the archive (downloaded if missing), checked, loaded."""
        path = self.archive(image)
        if not path.exists():
            if self.fetch is None:
                raise ImageError("not in the image cache and no hub to fetch it from")
            self.fetch(image.digest, path)
        if sha256_file(path) != image.hex:  # the cache is disk, and disks rot
            path.unlink(missing_ok=True)
            raise DigestMismatch(f"cached archive {path.name} no longer matches its digest")
        image_id, tags = _manifest(path)
        if not holds(image.ref, tags):
            raise ImageError(f"the archive holds {', '.join(tags) or 'no tag'}, not {image.ref}")
        self.podman("load", "--input", str(path), timeout=1800)
        loaded = self.podman("image", "inspect", "--format", "{{.Id}}", image_id).strip()
        if loaded != image_id:
            raise ImageError(f"podman has {loaded[:12]} after loading, not {image_id[:12]}")
        write_private(self.dir / f"{image.hex}.json", {"image_id": image_id, "ref": image.ref})
        log.info("image %s loaded as %s from %s", image.ref, image_id[:12], path.name)
        return image_id


def _failed(failure: _Failure) -> Readiness:
    return Readiness("pending" if failure.transient else "failed", failure.reason)


def _manifest(path: Path) -> tuple[str, list[str]]:
    """The image id (its config digest) and tags a docker-archive holds, read before loading
    so that what podman ends up with can be checked against it."""
    import tarfile  # 0.3 MB resident, paid only by agents that load images

    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise ImageError("the archive has no manifest.json")
            manifest = json.load(member)
    except (tarfile.TarError, KeyError, ValueError, OSError) as exc:
        raise ImageError(f"not a docker-archive: {exc}") from None
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise ImageError("the archive must hold exactly one image")
    # "<id>.json" from podman; "blobs/sha256/<id>" from newer docker.
    config = str(manifest[0].get("Config", "")).rsplit("/", 1)[-1].removesuffix(".json")
    return config, manifest[0].get("RepoTags") or []


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
