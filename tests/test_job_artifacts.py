"""Job artifacts through a real hub: an agent uploads an artifact of its own attempt (checked
by sha256, stored once under DATA_DIR/artifacts/sha256/), and people who may read the job
download the ones its attempts list. The attempt rows are written here straight into the
hub's database, as the jobs services would."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiorch.errors import Forbidden
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, enrollment, images, models
from edge_agent.client import HubClient, HubRefused
from tests.fixtures_hub import (
    AgentCert,
    HubProcess,
    enroll_agent,
    fresh_csr,
    make_enroll_token,
    tls_context,
)

OCTET = {"Content-Type": "application/octet-stream"}
CONTENT = b"weights after epoch 3\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


@dataclass
class World:
    hub: HubProcess
    runner: AgentCert  # the agent the attempt runs on
    other: AgentCert  # another enrolled agent
    tokens: dict[str, str]

    def upload(self, agent: AgentCert, attempt: str, sha: str, body: bytes) -> httpx.Response:
        with self.hub.client(agent) as client:
            path = f"/agents/{agent.agent_id}/jobs/{attempt}/artifacts/{sha}"
            return client.put(path, content=body, headers=OCTET)


def _insert_job(hub: HubProcess, name: str, project: str, agent_id: str, artifacts: list) -> str:
    """A running job with one attempt on `agent_id`, listing `artifacts`; returns its id."""
    db = sqlite3.connect(hub.data_dir / "aiorch.db", timeout=30)
    try:
        with db:
            job_id = db.execute(
                "INSERT INTO jobs (name, project, spec, state, priority, preemptible, gpus, nodes,"
                " max_duration_s, attempts, submitted_by, submitted_at, updated_at)"
                " VALUES (?, ?, '{}', 'running', 50, 0, 0, 1, 600, 1, 'test', 1, 1)",
                [name, project],
            ).lastrowid
            attempt = f"{job_id}.1"
            db.execute(
                "INSERT INTO job_attempts (id, job_id, number, backend, host, agent_id, state,"
                " artifacts, created_at, updated_at) VALUES (?, ?, 1, 'agent', 'h', ?,"
                " 'running', ?, 1, 1)",
                [attempt, job_id, agent_id, json.dumps(artifacts)],
            )
            db.execute("UPDATE jobs SET current_attempt = ? WHERE id = ?", [attempt, job_id])
    finally:
        db.close()
    return attempt


@pytest.fixture(scope="module")
def world(shared_hub: HubProcess) -> Iterator[World]:
    with shared_hub.client(shared_hub.admin_token) as root:
        enroll = [make_enroll_token(root, "edge1") for _ in range(2)]
        for project in ("alpha", "bravo"):
            assert root.post("/projects", json={"name": project}).status_code < 300
        tokens = {}
        for project in ("alpha", "bravo"):
            body = {"name": f"{project}-viewer", "role": "viewer", "project": project}
            tokens[project] = root.post("/tokens", json=body).json()["token"]
    agents = [
        enroll_agent(shared_hub, t, f"jobhost{i}")["credential"] for i, t in enumerate(enroll)
    ]
    yield World(shared_hub, agents[0], agents[1], tokens)


def artifact(sha: str, location: str = "hub", size: int = len(CONTENT)) -> dict[str, Any]:
    site_path = "/var/lib/aiorch-agent/artifacts/x/0-w.bin" if location == "site" else None
    return {"path": "/out/w.bin", "sha256": sha, "size": size, "location": location,
            "site_path": site_path}  # fmt: skip


def test_an_agent_uploads_an_artifact_of_its_own_attempt_once_its_sha256_matches(world: World):
    attempt = _insert_job(world.hub, "train-up", "alpha", world.runner.agent_id, [])
    stored = world.hub.data_dir / "artifacts" / "sha256" / SHA

    wrong = world.upload(world.runner, attempt, "0" * 64, CONTENT)
    assert wrong.status_code == 422 and SHA in wrong.json()["detail"]
    assert not stored.exists(), "nothing kept from a mismatched upload"
    assert world.upload(world.runner, attempt, "nothex", CONTENT).status_code == 422

    theirs = world.upload(world.other, attempt, SHA, CONTENT)
    assert theirs.status_code == 403 and "is not agent" in theirs.json()["detail"]
    assert world.upload(world.runner, "99999.1", SHA, CONTENT).status_code == 404
    assert not stored.exists()

    good = world.upload(world.runner, attempt, SHA, CONTENT)
    assert good.status_code == 201, good.text
    assert good.json() == {"sha256": SHA, "size": len(CONTENT)}
    assert stored.read_bytes() == CONTENT
    again = world.upload(world.runner, attempt, SHA, CONTENT)
    assert again.status_code == 201, "a retried upload is the same file"
    assert not list((world.hub.data_dir / "artifacts" / "tmp").iterdir()), "no temp left"

    with httpx.Client(verify=tls_context(world.hub.ca_path)) as anonymous:
        path = f"/api/v1/agents/{world.runner.agent_id}/jobs/{attempt}/artifacts/{SHA}"
        answer = anonymous.put(f"{world.hub.url}{path}", content=CONTENT, headers=OCTET)
    assert answer.status_code in (401, 403), "agents only"


def test_the_agent_client_uploads_a_file_and_is_told_why_a_refusal(world: World, tmp_path: Path):
    attempt = _insert_job(world.hub, "train-client", "alpha", world.runner.agent_id, [])
    data = b"metrics: {loss: 0.1}\n" * 1000
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "m.json").write_bytes(data)
    client = HubClient(world.hub.url, tls_context(world.hub.ca_path, world.runner))
    try:
        client.upload_artifact(world.runner.agent_id, attempt, sha, tmp_path / "m.json")
        assert (world.hub.data_dir / "artifacts" / "sha256" / sha).read_bytes() == data
        with pytest.raises(HubRefused) as refused:
            client.upload_artifact(world.runner.agent_id, attempt, "1" * 64, tmp_path / "m.json")
        assert refused.value.status == 422
    finally:
        client.close()


def test_people_who_may_read_the_job_download_the_artifacts_its_attempts_list(world: World):
    unlisted = hashlib.sha256(b"not this job's").hexdigest()
    at_site = "ab" * 32
    attempt = _insert_job(
        world.hub,
        "train-down",
        "alpha",
        world.runner.agent_id,
        [artifact(SHA), artifact(at_site, "site", 5 << 30)],
    )
    assert world.upload(world.runner, attempt, SHA, CONTENT).status_code == 201
    world.upload(world.runner, attempt, unlisted, b"not this job's")

    def get(who: str, job: str, sha: str) -> httpx.Response:
        with world.hub.client(world.tokens.get(who, who)) as client:
            return client.get(f"/jobs/{job}/artifacts/{sha}")

    answer = get("alpha", "train-down", SHA)
    assert answer.status_code == 200 and answer.content == CONTENT
    assert answer.headers["content-type"] == "application/octet-stream"
    assert get(world.hub.admin_token, "train-down", SHA).content == CONTENT
    assert get("bravo", "train-down", SHA).status_code == 403, "another project's viewer"
    listed_elsewhere = get("alpha", "train-down", unlisted)
    assert listed_elsewhere.status_code == 404, "in the store, but not this job's"
    site = get("alpha", "train-down", at_site)
    assert site.status_code == 404 and "kept at the site" in site.json()["detail"]
    assert get("alpha", "no-such-job", SHA).status_code == 404
    assert get("alpha", "train-down", "XYZ").status_code == 422
    with httpx.Client(verify=tls_context(world.hub.ca_path)) as anonymous:
        url = f"{world.hub.url}/api/v1/jobs/train-down/artifacts/{SHA}"
        assert anonymous.get(url).status_code == 401


def test_an_agent_may_fetch_the_image_and_model_files_its_jobs_name(make_context: Any):
    """A job's attempt in the desired state names its image and models as a workload does:
    the agent may download them, and the garbage collector keeps them."""
    ctx: HubContext = make_context(image_gc_grace_s=60)
    token = enrollment.create_token(ctx, "edge1", 3600, 1, "user:t")["token"]
    agent_id = enrollment.enroll(ctx, token, fresh_csr(), {"hostname": "jobbox"}, "1")["agent_id"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b"train image"

    image = asyncio.run(images.store(ctx, "train:v1", chunks(), "user:t", 1 << 20))["digest"]
    weights = hashlib.sha256(b"w").hexdigest()
    models.blobs_dir(ctx).mkdir(parents=True)
    (models.blobs_dir(ctx) / weights).write_bytes(b"w")
    model = {"digest": "sha256:" + "c" * 64, "files": [{"path": "w.bin", "sha256": weights}]}
    with pytest.raises(Forbidden):
        images.agent_blob(ctx, agent_id, image)
    document = {
        "workloads": [],
        "jobs": [{"attempt": "1.1", "image": {"digest": image}, "models": [model]}],
    }
    ctx.store.write(lambda db: agents.write_desired(db, agent_id, document, "jobs", ctx.clock()))
    assert images.agent_blob(ctx, agent_id, image).read_bytes() == b"train image"
    assert models.agent_file(ctx, agent_id, model["digest"], "w.bin").read_bytes() == b"w"
    ctx.clock.now += 120  # type: ignore[attr-defined]
    assert images.collect_garbage(ctx) == {}, "a job's image is in use"
