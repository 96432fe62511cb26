"""Every route of the app, walked with tokens of project alpha against project bravo's objects:
none crosses. Mutations of bravo's objects are 403/404 and change nothing, lists and fleet
views never show bravo's rows, and a route added without a row here fails the walk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiorch.hub.app import create_app
from aiorch.hub.context import HubContext
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from tests.fixtures_hub import HubProcess, tls_context

DASHBOARD = "/ui"
SKIPPED = {  # routes with their own authentication (agent credential, enrollment token, none)
    ("POST", "/api/v1/agents/{agent_id}/checkin"),
    ("POST", "/api/v1/agents/{agent_id}/telemetry"),
    ("GET", "/api/v1/agents/{agent_id}/images/{digest}"),
    ("GET", "/api/v1/agents/{agent_id}/models/{digest}/files/{path:path}"),
    ("PUT", "/api/v1/agents/{agent_id}/jobs/{attempt}/artifacts/{sha256}"),
    ("POST", "/api/v1/enroll"),
    ("POST", "/api/v1/agents/{agent_id}/renew"),
    ("GET", "/api/v1/agents/{agent_id}/ca-bundle"),
    ("GET", "/api/v1/ca-bundle"),
    ("POST", "/api/v1/renew-nonce"),
    ("POST", "/api/v1/renew-by-proof"),
    ("GET", "/healthz"),
    ("POST", "/api/v1/ramdisk/inventory"),  # a machine's boot token (test_machines)
    ("POST", "/api/v1/ramdisk/result"),
    ("GET", "/api/v1/ramdisk/image"),
}

JOB = """
apiVersion: aiorch.dev/v1
kind: Job
metadata: {{name: {name}, project: bravo}}
spec: {{image: bravo-model:v1, command: [sleep, "1"], maxDuration: 1h}}
"""
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: {name}, project: {project}}}
spec:
  image: {image}
  replicas: 1
"""


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route `create_app` serves, included routers unfolded."""
    settings = HubSettings(data_dir=Path("/nonexistent"))
    app = create_app(HubContext(store=Store(settings.db_path), settings=settings), run_jobs=False)
    found = []
    for route in app.routes:
        unfold = getattr(route, "effective_route_contexts", None)  # FastAPI's included routers
        for one in unfold() if unfold else [route]:
            if getattr(one, "methods", None) is None or one.path.startswith(DASHBOARD):
                continue  # static files; the dashboard's pages go by session (test_ui_*)
            found += [(method, one.path) for method in sorted(one.methods - {"HEAD"})]
    return found


@dataclass
class World:
    hub: HubProcess
    tokens: dict[str, str] = field(default_factory=dict)  # alpha-admin, ..., bravo-admin
    ids: dict[str, str] = field(default_factory=dict)

    def client(self, who: str) -> httpx.Client:
        return self.hub.client(self.tokens[who])


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


@pytest.fixture(scope="module")
def world(shared_hub: HubProcess) -> Iterator[World]:
    """Projects alpha and bravo, a token of each role in alpha, an admin of bravo, in bravo a
    quota, an image, a deployment and a job, and a shared image in `default`."""
    made = World(shared_hub)
    with shared_hub.client(shared_hub.admin_token) as root:
        for project in ("alpha", "bravo"):
            _ok(root.post("/projects", json={"name": project}))
            _ok(root.put(f"/quotas/{project}", json={"max_gpus": 8, "max_replicas": 8}))
        for who in ("alpha-admin", "alpha-operator", "alpha-viewer", "bravo-admin"):
            project, role = who.split("-")
            body = {"name": who, "role": role, "project": project}
            created = _ok(root.post("/tokens", json=body))
            made.tokens[who], made.ids[who] = created["token"], created["id"]
    with made.client("bravo-admin") as bravo:
        params = {"ref": "bravo-model:v1", "project": "bravo"}
        _ok(bravo.post("/images", params=params, content=b"bravo archive", headers=OCTET))
    with shared_hub.client(shared_hub.admin_token) as root:  # bravo-admin may not deploy
        _ok(root.post("/images", params={"ref": "shared:v1"}, content=b"shared", headers=OCTET))
        spec = SPEC.format(name="bravo-app", project="bravo", image="bravo-model:v1")
        _ok(root.post("/deployments", json={"spec": spec}))
        _ok(root.post("/jobs", json={"spec": JOB.format(name="bravo-job")}))
    yield made


BRAVO_MARKS = ("bravo", "bravo-app", "bravo-model")
OCTET = {"Content-Type": "application/octet-stream"}


def _requests(world: World) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """For every route: the request that aims at bravo, and what it must get: "denied" (403 or
    404), "read" (a 200 or 404 without bravo in it) or "list" (a 200 without bravo's rows);
    a 403 is fine for both where the role is too low (tokens: admins only)."""
    bravo_spec = {"spec": SPEC.format(name="bravo-app", project="bravo", image="bravo-model:v1")}
    octet = {"content": b"x", "headers": OCTET}
    model_file = {"path": "w.bin", "sha256": "0" * 64, "size": 1}
    bravo_admin, alpha_admin = world.ids["bravo-admin"], world.ids["alpha-admin"]
    return {
        ("GET", "/api/v1/agents"): ("list", {}),
        ("GET", "/api/v1/agents/x"): ("read", {}),
        ("GET", "/api/v1/agents/x/desired"): ("denied", {}),
        ("PUT", "/api/v1/agents/x/desired"): ("denied", {"json": {"document": {}}}),
        ("POST", "/api/v1/agents/x/revoke"): ("denied", {"json": {}}),
        ("POST", "/api/v1/agents/x/rekey"): ("denied", {"json": {}}),
        ("GET", "/api/v1/ca"): ("read", {}),
        ("POST", "/api/v1/ca/rotate"): ("denied", {"json": {"phase": "init"}}),
        ("GET", "/api/v1/bundles"): ("list", {}),
        ("POST", "/api/v1/bundles/import"): ("denied", {"json": {"path": "/nonexistent"}}),
        ("GET", "/api/v1/bundles/trust"): ("list", {}),
        ("POST", "/api/v1/bundles/trust"): ("denied", {"json": {"public_key": "x"}}),
        ("DELETE", "/api/v1/bundles/trust/ed25519:0000000000000000"): ("denied", {}),
        ("POST", "/api/v1/inventory/import"): (
            "denied",
            {"json": {"filename": "i.yml", "content": "all: {}"}},
        ),
        ("GET", "/api/v1/inventory/export"): ("denied", {}),
        ("GET", "/api/v1/hosts"): ("list", {}),
        ("GET", "/api/v1/hosts/x"): ("read", {}),
        ("POST", "/api/v1/hosts/x/retire"): ("denied", {"json": {}}),
        ("GET", "/api/v1/sites"): ("list", {}),
        ("POST", "/api/v1/enroll-tokens"): ("denied", {"json": {"site": "edge1"}}),
        ("GET", "/api/v1/enroll-tokens"): ("list", {}),
        ("DELETE", "/api/v1/enroll-tokens/x"): ("denied", {}),
        ("POST", "/api/v1/tokens"): ("denied", {"json": {"role": "admin", "project": "bravo"}}),
        ("GET", "/api/v1/tokens"): ("list", {}),
        ("DELETE", f"/api/v1/tokens/{bravo_admin}"): ("denied", {}),
        ("POST", "/api/v1/projects"): ("denied", {"json": {"name": "charlie"}}),
        ("GET", "/api/v1/projects"): ("list", {}),
        ("GET", "/api/v1/projects/bravo"): ("denied", {}),
        ("PATCH", "/api/v1/projects/bravo"): ("denied", {"json": {"allowed_sites": ["x"]}}),
        ("PUT", f"/api/v1/projects/bravo/roles/{alpha_admin}"): (
            "denied",
            {"json": {"role": "admin"}},
        ),
        ("DELETE", f"/api/v1/projects/bravo/roles/{bravo_admin}"): ("denied", {}),
        ("GET", "/api/v1/status"): ("list", {}),
        ("GET", "/api/v1/audit"): ("denied", {}),
        ("GET", "/api/v1/machines"): ("list", {}),
        ("GET", "/api/v1/machines/x"): ("read", {}),
        ("GET", "/api/v1/machine-classes"): ("list", {}),
        ("PUT", "/api/v1/machine-classes/x"): ("denied", {"json": {}}),
        ("POST", "/api/v1/machines"): (
            "denied",
            {"json": {"name": "x", "bmc": "ipmi://127.0.0.1", "mac": "52:54:00:00:00:09"}},
        ),
        ("POST", "/api/v1/machines/x/inspect"): ("denied", {}),
        ("POST", "/api/v1/machines/x/accept"): ("denied", {"json": {}}),
        ("POST", "/api/v1/machines/x/release"): ("denied", {"json": {}}),
        ("POST", "/api/v1/machines/x/power"): ("denied", {"json": {"action": "on"}}),
        ("POST", "/api/v1/machines/x/retire"): ("denied", {}),
        ("POST", "/api/v1/machines/x/provision"): ("denied", {"json": {"image": "i"}}),
        ("GET", "/api/v1/telemetry/series"): ("read", {"params": {"host": "x", "metric": "m"}}),
        ("GET", "/api/v1/accounting/gpu-hours"): ("list", {"params": {"by": "project"}}),
        ("POST", "/api/v1/runs"): ("denied", {"json": {"playbook": "site.yml"}}),
        ("GET", "/api/v1/runs"): ("list", {}),
        ("GET", "/api/v1/runs/x"): ("read", {}),
        ("GET", "/api/v1/runs/x/events"): ("read", {}),
        ("POST", "/api/v1/runs/x/cancel"): ("denied", {}),
        ("GET", "/api/v1/playbook-sets"): ("list", {}),
        ("POST", "/api/v1/playbook-sets"): ("denied", {"json": {"name": "x", "path": "/tmp"}}),
        ("POST", "/api/v1/deployments/plan"): ("denied", {"json": bravo_spec}),
        ("POST", "/api/v1/deployments"): ("denied", {"json": bravo_spec}),
        ("GET", "/api/v1/deployments"): ("list", {}),
        ("GET", "/api/v1/deployments/bravo-app"): ("denied", {}),
        ("DELETE", "/api/v1/deployments/bravo-app"): ("denied", {}),
        ("GET", "/api/v1/deployments/bravo-app/rollout"): ("denied", {}),
        ("POST", "/api/v1/deployments/bravo-app/rollout/pause"): ("denied", {}),
        ("GET", "/api/v1/images"): ("list", {}),
        ("POST", "/api/v1/images"): (
            "denied",
            {"params": {"ref": "bravo-model:v1", "project": "bravo"}, **octet},
        ),
        ("GET", "/api/v1/models"): ("list", {}),
        ("POST", "/api/v1/models/blobs"): (
            "denied",
            {"params": {"sha256": "0" * 64, "project": "bravo"}, **octet},
        ),
        ("POST", "/api/v1/models"): (
            "denied",
            {"json": {"name": "bravo-w", "project": "bravo", "files": [model_file]}},
        ),
        ("PUT", "/api/v1/quotas/bravo"): ("denied", {"json": {"max_gpus": 99}}),
        ("POST", "/api/v1/jobs/plan"): ("denied", {"json": {"spec": JOB.format(name="b2")}}),
        ("POST", "/api/v1/jobs"): ("denied", {"json": {"spec": JOB.format(name="b2")}}),
        ("GET", "/api/v1/jobs"): ("list", {}),
        ("GET", "/api/v1/jobs/bravo-job"): ("denied", {}),
        ("GET", "/api/v1/jobs/bravo-job/logs"): ("denied", {}),
        ("POST", "/api/v1/jobs/bravo-job/cancel"): ("denied", {}),
        ("GET", f"/api/v1/jobs/bravo-job/artifacts/{'0' * 64}"): ("denied", {}),
        ("GET", "/metrics"): ("list", {}),
        ("GET", "/metrics/dcgm"): ("list", {}),
        ("GET", "/openapi.json"): ("list", {}),
    }


def _template(path: str, routes: list[tuple[str, str]], method: str) -> tuple[str, str]:
    """The app route a concrete path is a request to."""
    parts = path.split("/")
    for m, route in routes:
        pieces = route.split("/")
        if (
            m == method
            and len(pieces) == len(parts)
            and all(
                p == q or (q.startswith("{") and q.endswith("}"))
                for p, q in zip(parts, pieces, strict=True)
            )
        ):
            return m, route
    raise AssertionError(f"{method} {path} is no route of the app")


def test_the_walk_covers_every_route_of_the_app(world: World):
    routes = app_routes()
    walked = {_template(path, routes, method) for method, path in _requests(world)}
    assert walked == set(routes) - SKIPPED


@pytest.mark.parametrize("who", ["alpha-admin", "alpha-operator", "alpha-viewer"])
def test_no_route_crosses_from_alpha_into_bravo(world: World, who: str):
    crossed = []
    for (method, path), (expected, request) in _requests(world).items():
        url = f"{world.hub.url}{path}"
        headers = {"Authorization": f"Bearer {world.tokens[who]}", **request.pop("headers", {})}
        verify = tls_context(world.hub.ca_path)
        response = httpx.request(method, url, headers=headers, timeout=30, verify=verify, **request)
        status, text = response.status_code, response.text
        allowed = {"denied": {403, 404}, "read": {200, 403, 404}, "list": {200, 403}}[expected]
        leaked = status < 300 and any(mark in text for mark in BRAVO_MARKS)
        if status not in allowed or leaked:
            crossed.append(f"{method} {path}: {status} {text[:200]}")
    assert crossed == []


def test_bravo_is_intact_after_the_walks(world: World):
    with world.client("bravo-admin") as bravo:
        assert _ok(bravo.get("/deployments/bravo-app"))["project"] == "bravo"
        assert _ok(bravo.get("/jobs/bravo-job"))["state"] == "queued", "not cancelled by alpha"
        assert [i["ref"] for i in _ok(bravo.get("/images"))] == ["docker.io/library/bravo-model:v1"]
        project = _ok(bravo.get("/projects/bravo"))
    assert project["allowed_sites"] == [] and project["quota"]["max_gpus"] == 8
    members = {m["token_id"]: m["role"] for m in project["members"]}
    assert members == {world.ids["bravo-admin"]: "admin"}


def test_one_token_is_checked_only_against_the_role_of_the_objects_project(world: World):
    with world.hub.client(world.hub.admin_token) as root:
        mixed = _ok(root.post("/tokens", json={"role": "viewer", "project": "bravo"}))
        _ok(root.put(f"/projects/alpha/roles/{mixed['id']}", json={"role": "operator"}))
    alpha_spec = SPEC.format(name="alpha-app", project="alpha", image="shared:v1")
    with world.hub.client(mixed["token"]) as client:
        assert client.post("/deployments", json={"spec": alpha_spec}).status_code == 200
        assert client.get("/deployments/bravo-app").status_code == 200  # viewer in bravo
        assert client.delete("/deployments/bravo-app").status_code == 403
        again = client.post("/deployments/bravo-app/rollout/undo")
        assert again.status_code == 403 and "role 'viewer' on project bravo" in again.text
        names = [d["name"] for d in _ok(client.get("/deployments"))]
        assert names == ["alpha-app", "bravo-app"]
        # alpha's operator role does not reach bravo's images either
        params = {"ref": "m:v2", "project": "bravo"}
        assert client.post("/images", params=params, content=b"x", headers=OCTET).status_code == 403
