"""Job artifacts in the hub's store: uploaded by the agent that ran the attempt, checked by
sha256, and served to the people who may read the job.

Files live under DATA_DIR/artifacts/sha256/<hex>, renamed into place only once their hash
matches (a reader never sees half a file), written once: an artifact uploaded again (an agent
retrying after a cut) is the same file. A user gets one only if an attempt of that job lists
it; one kept at the site is named with where it lies there.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiorch.errors import Forbidden, InvalidInput, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import authz
from aiorch.hub.services.auth import Principal
from aiorch.hub.services.images import receive

SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


def artifacts_dir(ctx: HubContext) -> Path:
    return ctx.settings.data_dir / "artifacts" / "sha256"


def _checked(sha256: str) -> str:
    if not SHA256_RE.match(sha256):
        raise InvalidInput(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    return sha256


async def store_upload(
    ctx: HubContext, agent_id: str, attempt: str, sha256: str, chunks: AsyncIterator[bytes]
) -> dict[str, Any]:
    """Keep an artifact of `attempt`, which must be this agent's, if its sha256 is `sha256`."""
    _checked(sha256)
    row = (
        ctx.store.read()
        .execute("SELECT agent_id FROM job_attempts WHERE id = ?", [attempt])
        .fetchone()
    )
    if row is None:
        raise NotFound(f"job attempt {attempt!r} not found")
    if row[0] != agent_id:
        raise Forbidden(f"job attempt {attempt} is not agent {agent_id}'s")
    final = artifacts_dir(ctx) / sha256
    tmp = ctx.settings.data_dir / "artifacts" / "tmp" / f"upload-{secrets.token_hex(8)}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        got, size = await receive(chunks, tmp, ctx.settings.max_artifact_bytes, "artifact")
        if got != sha256:
            raise InvalidInput(f"the upload has sha256 {got}, not {sha256}")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.chmod(0o444)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {"sha256": sha256, "size": size}


def artifact_file(ctx: HubContext, principal: Principal, job: str, sha256: str) -> Path:
    """The stored artifact `sha256` of `job`, for a caller who may read the job."""
    _checked(sha256)
    db = ctx.store.read()
    row = db.execute("SELECT id, project FROM jobs WHERE name = ?", [job]).fetchone()
    if row is None:
        raise NotFound(f"job {job!r} not found")
    authz.authorize(principal, "job.read", authz.in_project(row[1], "job"))
    listed = [
        entry
        for (raw,) in db.execute("SELECT artifacts FROM job_attempts WHERE job_id = ?", [row[0]])
        for entry in json.loads(raw or "[]")
        if isinstance(entry, dict) and entry.get("sha256") == sha256
    ]
    if not listed:
        raise NotFound(f"job {job} has no artifact {sha256}")
    path = artifacts_dir(ctx) / sha256
    if path.is_file():
        return path
    site = next((e for e in listed if e.get("location") == "site"), None)
    if site is not None:
        raise NotFound(
            f"artifact {sha256} of job {job} is kept at the site, at {site.get('site_path')} "
            "on the host that ran it"
        )
    raise NotFound(f"artifact {sha256} of job {job} is not in the hub's store")
