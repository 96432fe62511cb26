"""Per-project access control: the one authorize() and its table, tokens with a role per
project and an expiry, project policy in placement, and authentication before body checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlite_utils

from aiorch.errors import Conflict, Forbidden, Unauthorized
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import TelemetryBatch
from aiorch.hub.services import (
    accounting,
    auth,
    authz,
    deployment_views,
    deployments,
    enrollment,
    images,
    projects,
    telemetry,
    tokens,
)
from aiorch.hub.services.auth import Principal
from aiorch.hub.store.m009_projects import m009_projects
from aiorch.hub.store.migrations import MIGRATIONS
from edge_agent.contract.telemetry import GPU_UTILIZATION
from edge_agent.identity import csr_pem, new_key
from tests.fixtures_hub import HubProcess, tls_context

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 81559 * 2**20}
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: {name}, project: {project}}}
spec:
  image: localhost/m:v1
  resources: {{gpus: 1}}
  replicas: {replicas}
"""


def user(**projects: str) -> Principal:
    return Principal(kind="user", id="t", role="member", projects=projects)


def test_an_action_not_in_the_table_is_denied_even_to_a_global_admin():
    with pytest.raises(Forbidden, match=r"'deployment\.destroy' is not allowed to anyone"):
        authz.authorize(Principal("user", "root", "admin"), "deployment.destroy", authz.FLEET)


def test_roles_never_merge_across_projects():
    """Viewer on a, operator on b: b's operator role says nothing about a."""
    mixed = user(a="viewer", b="operator")
    authz.authorize(mixed, "deployment.apply", authz.in_project("b"))
    authz.authorize(mixed, "deployment.read", authz.in_project("a"))
    with pytest.raises(Forbidden, match=r"role 'viewer' on project a may not deployment\.apply"):
        authz.authorize(mixed, "deployment.apply", authz.in_project("a"))
    with pytest.raises(Forbidden, match="on the project's project"):
        authz.authorize(mixed, "deployment.read", authz.in_project("c"))
    assert authz.visible_projects(mixed, "deployment.apply") == {"b"}
    assert authz.visible_projects(Principal("user", "r", "admin"), "deployment.read") is None


def test_fleet_writes_need_a_global_admin_and_fleet_reads_a_role_somewhere():
    authz.authorize(user(a="viewer"), "host.read", authz.FLEET)
    with pytest.raises(Forbidden, match="needs 'viewer' or higher on some project"):
        authz.authorize(user(), "host.read", authz.FLEET)
    for action in ("inventory.import", "run.start", "quota.set", "project.policy.set"):
        with pytest.raises(Forbidden, match="needs a global admin"):
            authz.authorize(user(a="admin"), action, authz.in_project("a"))


def test_agent_credentials_may_do_nothing_here():
    with pytest.raises(Forbidden, match="agent credentials"):
        authz.authorize(Principal("agent", "ag", "agent"), "host.read", authz.FLEET)


@pytest.fixture
def ctx(make_context) -> HubContext:
    context = make_context()
    for site in ("dc1", "edge1"):
        token = enrollment.create_token(context, site, 3600, 10, "user:t")["token"]
        for n in range(2):
            facts = {"hostname": f"{site}-{n}", "gpus": [H100], "cpu": {"logical_count": 8}}
            enrollment.enroll(
                context, token, csr_pem(new_key()), {**facts, "memory_total_bytes": 2**36}, "1"
            )
    return context


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _push(ctx: HubContext, ref: str, project: str) -> dict:
    return asyncio.run(images.store(ctx, ref, _chunks(b"x"), "t", 1 << 20, project=project))


def test_expired_and_revoked_tokens_are_401(ctx: HubContext):
    made = tokens.create(ctx, "ci", "user:root", role="viewer", ttl_s=3600)
    header = f"Bearer {made['token']}"
    assert auth.authenticate(ctx, header).projects == {"default": "viewer"}
    ctx.clock.now += 3600  # type: ignore[attr-defined]
    with pytest.raises(Unauthorized, match="expired"):
        auth.authenticate(ctx, header)
    other = tokens.create(ctx, "ops", "user:root", role="operator", ttl_s=3600)
    tokens.revoke(ctx, other["id"], Principal("user", "root", "admin"))
    with pytest.raises(Unauthorized, match="revoked"):
        auth.authenticate(ctx, f"Bearer {other['token']}")


def test_a_token_is_shown_once_and_stored_hashed(ctx: HubContext):
    made = tokens.create(ctx, "ci", "user:root", role="viewer", ttl_s=60)
    secret = made["token"].split("_", 2)[2]
    dump = "\n".join(ctx.store.read().conn.iterdump())
    assert secret not in dump and made["id"] in dump
    listed = tokens.list_tokens(ctx, None)
    assert all("token" not in row and "secret_hash" not in row for row in listed)


def test_a_project_admin_revokes_only_tokens_wholly_in_its_projects(ctx: HubContext):
    projects.create(ctx, "a", "user:root")
    projects.create(ctx, "b", "user:root")
    both = tokens.create(ctx, "both", "user:root", role="viewer", project="a", ttl_s=60)
    projects.grant(ctx, "b", both["id"], "viewer", "user:root")
    with pytest.raises(Forbidden, match="needs 'admin' or higher on the token's project"):
        tokens.revoke(ctx, both["id"], user(a="admin"))
    tokens.revoke(ctx, both["id"], user(a="admin", b="admin"))


def test_migration_keeps_what_existing_tokens_could_do(tmp_path: Path):
    db = sqlite_utils.Database(tmp_path / "old.db")
    for migration in MIGRATIONS[: MIGRATIONS.index(m009_projects)]:
        migration(db)
    for ident, role in (("ad", "admin"), ("op", "operator"), ("vi", "viewer")):
        db.execute(
            "INSERT INTO api_tokens (id, secret_hash, role, name, created_by, created_at) "
            "VALUES (?, 'h', ?, '', 'hub', 0)",
            [ident, role],
        )
    db.execute(
        "INSERT INTO deployments (name, project, spec, spec_hash, generation, updated_by, "
        "updated_at) VALUES ('chat', 'nlp', '{}', 'x', 1, 'u', 0)"
    )
    m009_projects(db)
    assert dict(db.execute("SELECT id, global_admin FROM api_tokens ORDER BY id").fetchall()) == {
        "ad": 1, "op": 0, "vi": 0
    }  # fmt: skip
    roles = db.execute("SELECT token_id, project, role FROM token_roles ORDER BY token_id")
    assert roles.fetchall() == [("op", "default", "operator"), ("vi", "default", "viewer")]
    assert [r[0] for r in db.execute("SELECT name FROM projects ORDER BY name")] == [
        "default", "nlp"
    ]  # fmt: skip
    assert "role" not in db.table("api_tokens").columns_dict


def test_placement_uses_only_the_sites_the_project_allows(ctx: HubContext):
    _push(ctx, "localhost/m:v1", "default")
    projects.create(ctx, "edge", "user:root")
    projects.set_policy(ctx, "edge", {"allowed_sites": ["edge1"]}, "user:root")
    result = deployments.apply(ctx, SPEC.format(name="e", project="edge", replicas=3), "u")
    hosts = {r["host"] for r in result["plan"]["placed"]}
    assert hosts == {"edge1-0", "edge1-1"} and result["plan"]["unplaced"]
    free = deployments.apply(ctx, SPEC.format(name="f", project="free", replicas=2), "u")
    assert {r["host"] for r in free["plan"]["placed"]} == {"dc1-0", "dc1-1"}


def test_allowed_host_paths_are_the_projects_list(ctx: HubContext):
    projects.create(ctx, "ml", "user:root")
    db = ctx.store.read()
    assert projects.allowed_host_paths(db, "ml") == []
    assert projects.allowed_host_paths(db, "never-made") == []
    projects.set_policy(ctx, "ml", {"host_path_prefixes": ["/data", "/models"]}, "user:root")
    assert projects.allowed_host_paths(ctx.store.read(), "ml") == ["/data", "/models"]


def test_a_name_or_image_of_another_project_is_not_taken_over(ctx: HubContext):
    _push(ctx, "localhost/m:v1", "default")
    deployments.apply(ctx, SPEC.format(name="chat", project="a", replicas=1), "u")
    with pytest.raises(Conflict, match="chat exists in another project"):
        deployments.apply(ctx, SPEC.format(name="chat", project="b", replicas=1), "u")
    assert deployment_views.project_of(ctx, "chat") == "a"
    _push(ctx, "localhost/own:v1", "a")
    with pytest.raises(Conflict, match="belongs to another project"):
        _push(ctx, "localhost/own:v1", "b")
    assert [i["ref"] for i in images.list_images(ctx, frozenset({"b"}))] == []
    assert [i["project"] for i in images.list_images(ctx, frozenset({"a"}))] == ["a"]


def test_a_project_uses_its_own_images_and_defaults_not_anothers(ctx: HubContext):
    _push(ctx, "localhost/m:v1", "a")
    with pytest.raises(Forbidden, match="not in the hub's image store"):
        deployments.apply(ctx, SPEC.format(name="x", project="b", replicas=1), "u")
    deployments.apply(ctx, SPEC.format(name="y", project="a", replicas=1), "u")


def test_gpu_hours_by_project_show_only_the_callers_projects(make_context):
    ctx = make_context()
    start = ctx.clock.now - 3600
    token = enrollment.create_token(ctx, "edge1", 86400, 1, "user:t")["token"]
    agent = enrollment.enroll(ctx, token, csr_pem(new_key()), {"hostname": "g"}, "1")["agent_id"]
    series = [
        {"metric": GPU_UTILIZATION, "labels": {"gpu": str(i), "project": project}}
        for i, project in enumerate(("alpha", "bravo"))
    ]
    samples = [(2 * m + i, start + 60 * m, i, 50.0) for m in range(10) for i in range(2)]
    batch = TelemetryBatch(
        epoch="e", seq_start=0, seq_end=len(samples) - 1, series=series, samples=samples
    )
    asyncio.run(telemetry.ingest(ctx, agent, batch))
    telemetry.downsample(ctx)
    alpha = frozenset({"alpha"})
    assert [r["project"] for r in accounting.gpu_hours(ctx, "project", 7200, alpha)] == ["alpha"]
    assert [r["project"] for r in accounting.gpu_hours(ctx, "project", 7200)] == ["alpha", "bravo"]
    (site,) = accounting.gpu_hours(ctx, "site", 7200, alpha)  # the fleet's whole use
    assert site["gpu_hours_available"] == pytest.approx(20 / 60, abs=1e-3)


# ---- over HTTP -----------------------------------------------------------------------------


HUGE = b'{"spec": "' + b"x" * (9 * 1024 * 1024) + b'"}'
JSON = {"Content-Type": "application/json"}


def test_unauthenticated_requests_get_401_before_any_body_check(shared_hub: HubProcess):
    url = f"{shared_hub.url}/api/v1"
    verify = tls_context(shared_hub.ca_path)
    bad = {"Authorization": "Bearer aio_0011223344556677_wrong"}
    for headers in ({}, bad):
        for response in (
            httpx.post(
                f"{url}/images", params={"ref": "x"}, headers=headers, verify=verify
            ),  # was 415
            httpx.post(
                f"{url}/deployments", content=b"{nope", headers={**headers, **JSON}, verify=verify
            ),  # 422
            httpx.post(
                f"{url}/deployments", content=HUGE, headers={**headers, **JSON}, verify=verify
            ),  # was 413
            httpx.patch(f"{url}/projects/default", content=b"x", headers=headers, verify=verify),
        ):
            assert response.status_code == 401, response.text
    with shared_hub.client(shared_hub.admin_token) as admin:
        assert admin.post("/images", params={"ref": "x"}, content=b"x").status_code == 415
        assert admin.post("/deployments", content=b"{nope", headers=JSON).status_code == 422


def _token(admin: httpx.Client, role: str, project: str = "default") -> dict:
    made = admin.post("/tokens", json={"role": role, "project": project, "name": role})
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_viewer_cannot_mutate_and_operator_cannot_grant(shared_hub: HubProcess):
    with shared_hub.client(shared_hub.admin_token) as admin:
        viewer, operator = _token(admin, "viewer"), _token(admin, "operator")
    spec = {"spec": SPEC.format(name="v", project="default", replicas=1)}
    with shared_hub.client(viewer["token"]) as client:
        assert client.post("/deployments", json=spec).status_code == 403
        assert client.post("/deployments/plan", json=spec).status_code == 403
    with shared_hub.client(operator["token"]) as client:
        grant = client.put(f"/projects/default/roles/{operator['id']}", json={"role": "admin"})
        assert grant.status_code == 403
        assert client.post("/tokens", json={"role": "viewer"}).status_code == 403
        assert client.get("/tokens").status_code == 403
        assert client.post("/deployments/plan", json=spec).status_code == 200


def test_a_project_admin_makes_tokens_and_grants_only_on_its_project(shared_hub: HubProcess):
    with shared_hub.client(shared_hub.admin_token) as admin:
        admin.post("/projects", json={"name": "team"})
        lead = _token(admin, "admin", "team")
    with shared_hub.client(lead["token"]) as client:
        member = client.post("/tokens", json={"role": "operator", "project": "team"})
        assert member.status_code == 201 and member.json()["roles"] == {"team": "operator"}
        assert client.post("/tokens", json={"global_admin": True}).status_code == 403
        assert client.post("/tokens", json={"role": "viewer"}).status_code == 403  # default
        token_id = member.json()["id"]
        shown = client.put(f"/projects/team/roles/{token_id}", json={"role": "viewer"})
        assert shown.json() == {"project": "team", "token_id": token_id, "role": "viewer"}
        assert (
            client.put(f"/projects/default/roles/{token_id}", json={"role": "viewer"}).status_code
            == 403
        )
        assert client.delete(f"/projects/team/roles/{token_id}").status_code == 204
        listed = client.get("/tokens").json()
    assert {t["id"] for t in listed} == {lead["id"]}  # the member holds no role on team now


def test_cli_projects_and_tokens(shared_hub: HubProcess):
    created = shared_hub.cli_json("projects", "create", "cli-team")
    assert created["name"] == "cli-team" and created["members"] == []
    token = shared_hub.cli_json(
        "tokens", "create", "--name", "ci", "--role", "operator", "--project", "cli-team",
        "--expires", "30d",
    )  # fmt: skip
    assert token["roles"] == {"cli-team": "operator"} and token["token"].startswith("aio_")
    assert token["expires_at"] - token["created_at"] == pytest.approx(30 * 86400)
    legacy = shared_hub.cli_json("token", "create", "--role", "viewer")
    assert legacy["roles"] == {"default": "viewer"}
    shared_hub.cli_json("projects", "grant", "cli-team", legacy["id"], "viewer")
    shown = shared_hub.cli_json(
        "projects", "set", "cli-team", "--allow-sites", "edge1,edge2", "--allow-regions", "eu",
        "--host-path-prefix", "/data",
    )  # fmt: skip
    assert shown["allowed_sites"] == ["edge1", "edge2"] and shown["allowed_regions"] == ["eu"]
    assert shown["host_path_prefixes"] == ["/data"]
    members = shared_hub.cli_json("projects", "show", "cli-team")["members"]
    assert {m["token_id"]: m["role"] for m in members} == {
        token["id"]: "operator", legacy["id"]: "viewer"
    }  # fmt: skip
    shared_hub.cli("projects", "revoke", "cli-team", legacy["id"])
    assert "cli-team" in {p["name"] for p in shared_hub.cli_json("projects", "list")}
    refused = shared_hub.cli(
        "projects", "set", "cli-team", "--host-path-prefix", "data", check=False
    )
    assert refused.returncode == 1 and "normalised absolute path" in refused.stderr
    missing = shared_hub.cli("tokens", "create", "--name", "x", check=False)
    assert missing.returncode == 1 and "--global-admin" in missing.stderr
