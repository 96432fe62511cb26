"""Sealed values are bound to where they belong: a secretEnv value opens only for its project,
deployment and variable, hand-written desired states carry no secrets and must be documents
the agents accept, and nobody but a global admin sees a sealed blob."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from aiorch.errors import Unavailable
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import CheckinRequest
from aiorch.hub.sealing import KEY_FILE, Sealer, secret_env_binding
from aiorch.hub.services import agents, deployment_views, deployments, enrollment, images
from aiorch.hub.services.auth import Principal
from edge_agent.identity import csr_pem, new_key
from tests.fixtures_desired import a_workload
from tests.fixtures_hub import HubProcess, enroll_agent, make_enroll_token, make_token

ADMIN = Principal("user", "root", "admin")
OPERATOR = Principal("user", "ops", "operator")
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: {name}, project: nlp}}
spec:
  image: localhost/aiorch-model:v1
  env: {{MODE: {mode}}}
  secretEnv: {{API_KEY: {secret}}}
"""


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
def ctx(make_context: Any) -> HubContext:
    context: HubContext = make_context()
    token = enrollment.create_token(context, "dc1", 3600, 10, "user:t")["token"]
    for name in ("box-a", "box-b"):
        facts = {"hostname": name, "cpu": {"logical_count": 8}, "memory_total_bytes": 2**34}
        enrollment.enroll(context, token, csr_pem(new_key()), facts, "1")
    asyncio.run(images.store(context, "localhost/aiorch-model:v1", _chunks(b"x"), "t", 1 << 20))
    return context


def _apply(ctx: HubContext, name: str, secret: str, mode: str = "a") -> str:
    """Apply a one-replica deployment; the agent id of the host it landed on."""
    result = deployments.apply(ctx, SPEC.format(name=name, secret=secret, mode=mode), "user:t")
    (replica,) = result["plan"]["placed"] or result["plan"]["kept"]
    db = ctx.store.read()
    return str(
        db.execute("SELECT agent_id FROM hosts WHERE name = ?", [replica["host"]]).fetchone()[0]
    )


def _stored_document(ctx: HubContext, agent_id: str) -> dict[str, Any]:
    row = ctx.store.read().execute(
        "SELECT document FROM desired_states WHERE agent_id = ?", [agent_id]
    )
    return dict(json.loads(row.fetchone()[0]))


def _workload(document: dict[str, Any], deployment: str) -> dict[str, Any]:
    (found,) = [w for w in document["workloads"] if w["deployment"] == deployment]
    assert isinstance(found, dict)
    return found


def _store_document(ctx: HubContext, agent_id: str, document: dict[str, Any]) -> None:
    """Write a desired state past the API, as someone with the database file could."""
    text = json.dumps(document, sort_keys=True)
    ctx.store.write(
        lambda db: db.execute(
            "UPDATE desired_states SET document = ?, revision = revision + 1 WHERE agent_id = ?",
            [text, agent_id],
        )
    )


def _checkin(ctx: HubContext, agent_id: str) -> dict[str, Any]:
    body = CheckinRequest(agent_version="1", uptime_s=1, facts_hash="f", applied_revision=0)
    answer = asyncio.run(agents.checkin(ctx, agent_id, body, None))
    assert answer.document is not None
    return answer.document


def test_a_sealed_value_opens_only_with_its_own_binding(tmp_path: Any):
    sealer = Sealer.in_dir(tmp_path)
    here, there = secret_env_binding("nlp", "chat", "K"), secret_env_binding("nlp", "other", "K")
    sealed = sealer.seal("s3", here)
    assert sealer.seal("s3", here) == sealed, "deterministic where it belongs"
    assert sealer.seal("s3", there) != sealed, "another place seals the same secret apart"
    assert sealer.unseal(sealed, here) == "s3"
    for wrong in (there, secret_env_binding("nlp", "chat", "K2"), ("nlp", "chat", "K")):
        with pytest.raises(Unavailable, match="moved from where it was sealed"):
            sealer.unseal(sealed, wrong)


def test_a_secret_copied_into_another_agents_desired_state_does_not_open(ctx: HubContext):
    owner = _apply(ctx, "chat", "chat-secret-41")
    thief = _apply(ctx, "other", "other-secret")
    assert _checkin(ctx, owner)["workloads"][0]["secret_env"] == {"API_KEY": "chat-secret-41"}
    stolen = _workload(_stored_document(ctx, owner), "chat")["secret_env"]
    document = _stored_document(ctx, thief)
    _workload(document, "other")["secret_env"] = stolen
    _store_document(ctx, thief, document)
    with pytest.raises(Unavailable):
        _checkin(ctx, thief)


def test_sealed_blobs_are_shown_to_global_admins_only(ctx: HubContext):
    agent_id = _apply(ctx, "chat", "chat-secret-41")
    for principal in (None, OPERATOR, Principal("user", "v", "viewer")):
        shown = agents.get_desired(ctx, agent_id, principal)["document"]["workloads"][0]
        assert shown["secret_env"] == {"API_KEY": "<sealed>"}
    shown = agents.get_desired(ctx, agent_id, ADMIN)["document"]["workloads"][0]
    assert shown["secret_env"]["API_KEY"].startswith("sealed:v2:")


def test_values_sealed_before_bindings_open_and_are_resealed_bound_on_the_next_write(
    ctx: HubContext,
):
    agent_id = _apply(ctx, "chat", "old-secret-9")
    key = (ctx.settings.data_dir / KEY_FILE).read_bytes()
    legacy = (
        "sealed:v1:" + base64.urlsafe_b64encode(AESSIV(key).encrypt(b"old-secret-9", None)).decode()
    )  # as the hub sealed before bindings existed

    def unbind(db: Any) -> None:
        for table in ("deployments", "deployment_revisions"):
            for rowid, text in db.execute(f"SELECT rowid, spec FROM {table}").fetchall():
                spec = json.loads(text)
                spec["spec"]["secretEnv"] = {"API_KEY": legacy}
                db.execute(
                    f"UPDATE {table} SET spec = ? WHERE rowid = ?", [json.dumps(spec), rowid]
                )

    ctx.store.write(unbind)
    document = _stored_document(ctx, agent_id)
    document["workloads"][0]["secret_env"] = {"API_KEY": legacy}
    _store_document(ctx, agent_id, document)
    assert _checkin(ctx, agent_id)["workloads"][0]["secret_env"] == {"API_KEY": "old-secret-9"}
    shown = deployment_views.show(ctx, "chat")
    assert shown["spec"]["spec"]["secretEnv"] == {"API_KEY": "**********"}

    again = _apply(ctx, "chat", "old-secret-9", mode="b")  # the next apply that writes
    (workload,) = _stored_document(ctx, again)["workloads"]
    assert workload["secret_env"]["API_KEY"].startswith("sealed:v2:")
    spec_text = ctx.store.read().execute("SELECT spec FROM deployments").fetchone()[0]
    assert legacy not in spec_text and "sealed:v2:" in spec_text
    assert _checkin(ctx, again)["workloads"][0]["secret_env"] == {"API_KEY": "old-secret-9"}


# ---- hand-written desired states over the API -------------------------------------------------


@pytest.fixture
def desired_path(shared_hub: HubProcess, admin: httpx.Client) -> str:
    name = f"hand-written-{uuid.uuid4().hex[:8]}"  # one host per test, each enrolled once
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), name)
    return f"/agents/{enrolled['agent_id']}/desired"


def test_hand_written_secret_env_is_refused(admin: httpx.Client, desired_path: str):
    for secret_env in ({"API_KEY": "plain"}, {"API_KEY": "sealed:v2:AAAA"}):
        document = {"workloads": [a_workload(secret_env=secret_env)]}
        response = admin.put(desired_path, json={"document": document})
        assert response.status_code == 422, response.text
        assert "secret_env" in response.json()["detail"]
    assert admin.get(desired_path).json()["revision"] == 0


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"workloads": {"id": "x"}}, "must be a list"),
        ({"workloads": [{"name": "llm"}]}, "workloads[0]: must be an object with an id"),
        ({"workloads": [a_workload(image={"ref": "m:v1", "digest": "sha256:abc"})]}, "digest"),
        (
            {"workloads": [a_workload(volumes=[{"host_path": "/a:/etc", "mount_path": "/m"}])]},
            "volumes.host_path",
        ),
        ({"workloads": [a_workload(), a_workload()]}, "appears more than once"),
    ],
    ids=["not-a-list", "no-id", "bad-digest", "colon-in-path", "same-id-twice"],
)
def test_a_desired_state_the_agents_would_refuse_is_422(
    admin: httpx.Client, desired_path: str, document: dict, named: str
):
    response = admin.put(desired_path, json={"document": document})
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]
    assert admin.get(desired_path).json()["revision"] == 0


def test_an_acceptable_hand_written_desired_state_is_stored_for_a_global_admin_only(
    shared_hub: HubProcess, admin: httpx.Client, desired_path: str
):
    document = {"workloads": [a_workload()]}
    with shared_hub.client(make_token(admin, "operator")) as operator:
        assert operator.put(desired_path, json={"document": document}).status_code == 403
    response = admin.put(desired_path, json={"document": document})
    assert response.status_code == 200, response.text
    assert admin.get(desired_path).json()["document"] == document
