"""Image archives from the hub, cached in the state dir and loaded into podman.

There is no registry: the hub serves each image as a `podman save` docker-archive, named by
the sha256 of the file. The agent keeps the archives its desired workloads use under
`state_dir/images/<hex>.tar` (so a removed image or a reboot needs no new download), and
after a verified load `<hex>.json` names the image id it became. Containers are created from
that id, never from the ref, so a tag moved by someone else can't change what runs.

Fetching and loading run as a background job (jobs.py); a download cut short resumes where it
stopped (download.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.client import DigestMismatch
from edge_agent.contract.image import holds
from edge_agent.contract.workload import Image
from edge_agent.digest import sha256_file
from edge_agent.state import read_json, write_private
from edge_agent.workloads.jobs import Jobs
from edge_agent.workloads.podman import Podman

log = logging.getLogger("aiorch.agent.workloads")

Fetch = Callable[[Image, Path], None]  # (image, dest): download the archive to dest, verified


class ImageError(Exception):
    """The archive can't become the image asked for; the message says why, in one line."""


@dataclass(frozen=True)
class Readiness:
    state: str  # "ready", "pending" or "failed"
    reason: str | None = None
    image_id: str | None = None


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
        self.jobs = Jobs("aiorch-images", clock)
        # Digests other users of the cache (the job runner) need, by user: prune keeps them.
        self.pinned: dict[str, set[str]] = {}

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
        # (while a job runs, its record is being written)
        if not self.jobs.running(image.digest) and (image_id := self.loaded_id(image, present)):
            return Readiness("ready", image_id=image_id)
        what = f"image {image.digest[:19]}"
        outcome = self.jobs.poll(image.digest, lambda: self._fetch_and_load(image), deadline, what)
        if outcome.state == "pending" and outcome.reason is None:
            return Readiness("pending", f"fetching and loading {what}")
        return Readiness(outcome.state, outcome.reason, outcome.result)

    def prune(self, keep: set[str]) -> None:
        """Drop the archives, finished jobs and failures of digests no desired workload uses
        any more (an archive is as big as its image; the image itself stays loaded). A
        partial download stays while its image is wanted: it resumes from there."""
        keep = keep.union(*self.pinned.values())
        busy = keep | self.jobs.keep_only(keep)
        for path in self.dir.glob("*.tar*"):
            if f"sha256:{path.name.split('.')[0]}" not in busy:
                path.unlink(missing_ok=True)
        for path in self.dir.glob(".*.part"):  # temp files of agents before resumable downloads
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.jobs.close()

    def _fetch_and_load(self, image: Image) -> str:
        """Runs on the worker thread: the archive (downloaded if missing), checked, loaded."""
        path = self.archive(image)
        if not path.exists():
            if self.fetch is None:
                raise ImageError("not in the image cache and no hub to fetch it from")
            self.fetch(image, path)
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
