"""A finished job's artifacts: copied out of its container, hashed, and either uploaded to the
hub (checked there by sha256) or, above the site's limit, kept on the host by reference.

Copies lie under `state_dir/artifacts/<attempt>/`; one bound for the hub is deleted once the
hub has it, one kept at the site stays (its path is in the report). A directory is kept as a
tar of it. An upload the hub is away for is retried next round; one it refuses for good
(e.g. over its size limit) stays at the site instead, with a note saying why.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from edge_agent.client import HubRefused, HubUnavailable
from edge_agent.contract.job import JobRun
from edge_agent.digest import sha256_file
from edge_agent.jobs.journal import ArtifactRecord, Journal
from edge_agent.workloads.podman import Podman, PodmanError

log = logging.getLogger("aiorch.agent.jobs")

Upload = Callable[[str, str, Path], None]  # (attempt, sha256 hex, file): put it on the hub


def collect(
    podman: Podman, container_id: str, run: JobRun, root: Path
) -> tuple[list[ArtifactRecord], list[str]]:
    """Copy `run`'s artifacts out of the stopped container into `root/<attempt>/` and hash
    them, each placed by the site's size limit; and notes about those not to be had."""
    where = root / run.attempt
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    found, notes = [], []
    for index, path in enumerate(run.artifacts):
        name = Path(path).name or "artifact"
        local = where / f"{index}-{name}"
        try:
            podman("cp", f"{container_id}:{path}", str(local))
        except PodmanError as exc:
            notes.append(f"artifact {path} not collected: {exc}")
            continue
        if local.is_dir():
            folder, local = local, where / f"{index}-{name}.tar"
            with tarfile.open(local, "w") as tar:
                tar.add(folder, arcname=name)
            shutil.rmtree(folder)
        size = local.stat().st_size
        location = "hub" if size <= run.site_artifact_limit_bytes else "site"
        found.append(ArtifactRecord(path, sha256_file(local), size, location, str(local)))
    return found, notes


def upload_pending(journal: Journal, upload: Upload | None) -> bool:
    """Upload the journal's artifacts the hub lacks; True if any record changed. The hub
    being away leaves them for the next round."""
    changed = False
    for record in journal.artifacts:
        if record.location != "hub" or record.uploaded:
            continue
        if upload is None:
            _keep_at_site(journal, record, "no hub to upload it to")
            changed = True
            continue
        try:
            upload(journal.attempt, record.sha256, Path(record.local))
        except HubUnavailable as exc:
            log.info("job %s: artifact %s waits for the hub: %s", journal.attempt, record.path, exc)
            return changed
        except HubRefused as exc:
            _keep_at_site(journal, record, f"the hub refused it: {exc.detail}")
            changed = True
            continue
        record.uploaded, changed = True, True
        Path(record.local).unlink(missing_ok=True)
    return changed


def _keep_at_site(journal: Journal, record: ArtifactRecord, why: str) -> None:
    record.location = "site"
    journal.note(f"artifact {record.path} kept at the site ({why})")
