"""Every route of the app, enumerated from the app itself, refuses the wrong callers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from aiorch.hub.app import API_PREFIX, PUBLIC_PATHS, create_app
from aiorch.hub.context import HubContext
from aiorch.hub.routers import agent_protocol, ramdisk
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from tests.fixtures_hub import AgentCert, HubProcess, enroll_agent, make_enroll_token, make_token

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
UPLOADS: set[str] = set()  # paths whose body is a file, not JSON


def _routes() -> list[tuple[str, str]]:
    """Every operation the app declares (its OpenAPI schema), plus the schema route itself."""
    settings = HubSettings(data_dir=Path("/nonexistent"))
    app = create_app(HubContext(store=Store(settings.db_path), settings=settings), run_jobs=False)
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in sorted(operations.items()):
            content = (operation.get("requestBody") or {}).get("content", {})
            if "application/octet-stream" in content:
                UPLOADS.add(path)
            found.append((method.upper(), path))
    assert len(found) > 10, "route enumeration found too few routes"
    return [*found, ("GET", "/openapi.json")]


ROUTES = _routes()
PROTECTED = [(m, p) for m, p in ROUTES if p not in PUBLIC_PATHS]
# The agent protocol's routes: a client certificate authenticates there, never a bearer token.
# (OpenAPI writes a `{path:path}` parameter as `{path}`.)
AGENT_PATHS = {
    API_PREFIX + getattr(route, "path", "").replace(":path}", "}")
    for route in agent_protocol.router.routes
}
AGENT_ROUTES = [(m, p) for m, p in PROTECTED if p in AGENT_PATHS]
# The ramdisk's routes: a machine's boot token authenticates there, never a user's token.
RAMDISK_PATHS = {API_PREFIX + getattr(route, "path", "") for route in ramdisk.router.routes}
RAMDISK_ROUTES = [(m, p) for m, p in PROTECTED if p in RAMDISK_PATHS]
USER_ROUTES = [(m, p) for m, p in PROTECTED if p not in AGENT_PATHS | RAMDISK_PATHS]


def _call(
    hub: HubProcess, method: str, path: str, who: str | AgentCert | None, agent_id: str = "x"
) -> httpx.Response:
    """`path` called with a bearer token, as an agent (its certificate), or as nobody."""
    url = re.sub(r"\{agent_id\}", agent_id, path)
    url = re.sub(r"\{[^}]+\}", "x", url)
    headers = {}
    body: dict = {}
    if method in MUTATING and method != "DELETE" and path in UPLOADS:
        body = {"content": b"x"}
        headers["Content-Type"] = "application/octet-stream"
    elif method in MUTATING and method != "DELETE":
        body = {"json": {}}
    with hub.client(who, root=True) as client:
        return client.request(method, url, headers=headers, **body)


def test_public_paths_are_only_health_and_the_ways_to_a_certificate():
    """No bearer token: the health probe, enrollment, the public CA bundle and renewal by
    proof (the agent's key is the proof there)."""
    ways = {"enroll", "ca-bundle", "renew-nonce", "renew-by-proof"}
    assert set(PUBLIC_PATHS) == {"/healthz", *(f"/api/v1/{way}" for way in ways)}


def test_the_agent_routes_are_found():
    assert {p.rsplit("/", 1)[1] for p in AGENT_PATHS} >= {"checkin", "telemetry", "renew"}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_route_without_token_is_401(shared_hub: HubProcess, method: str, path: str):
    assert _call(shared_hub, method, path, None).status_code == 401


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_route_with_wrong_token_is_401(shared_hub: HubProcess, method: str, path: str):
    for bad in ("aio_0011223344556677_wrong", "garbage", "aia_0011223344556677_wrong"):
        assert _call(shared_hub, method, path, bad).status_code == 401


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p in USER_ROUTES if m in MUTATING])
def test_viewer_gets_403_on_mutating_route(
    shared_hub: HubProcess, admin: httpx.Client, method: str, path: str
):
    viewer = make_token(admin, "viewer")
    assert _call(shared_hub, method, path, viewer).status_code == 403


@pytest.mark.parametrize(("method", "path"), RAMDISK_ROUTES)
def test_user_token_is_no_boot_token_on_ramdisk_routes(
    shared_hub: HubProcess, admin: httpx.Client, method: str, path: str
):
    """Even an admin's valid token is refused (401) where only a machine's boot token counts."""
    for role in ("viewer", "admin"):
        assert _call(shared_hub, method, path, make_token(admin, role)).status_code == 401


def test_the_ramdisk_routes_are_found():
    assert {p.rsplit("/", 1)[1] for p in RAMDISK_PATHS} == {"inventory", "result", "image"}


@pytest.mark.parametrize(("method", "path"), AGENT_ROUTES)
def test_agent_certificate_gets_403_on_other_agents_routes(
    shared_hub: HubProcess, admin: httpx.Client, method: str, path: str
):
    mine = enroll_agent(shared_hub, make_enroll_token(admin), f"auth-{method}-{hash(path)}-a")
    other = enroll_agent(shared_hub, make_enroll_token(admin), f"auth-{method}-{hash(path)}-b")
    response = _call(shared_hub, method, path, mine["credential"], agent_id=other["agent_id"])
    assert response.status_code == 403


@pytest.mark.parametrize(("method", "path"), USER_ROUTES)
def test_agent_certificate_gets_401_on_user_routes(
    shared_hub: HubProcess, admin: httpx.Client, method: str, path: str
):
    """An agent's certificate is no bearer token: user routes answer 401 (was 403 when agents
    had bearer credentials)."""
    mine = enroll_agent(shared_hub, make_enroll_token(admin), f"auth-{method}-{hash(path)}-u")
    response = _call(shared_hub, method, path, mine["credential"], agent_id=mine["agent_id"])
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path"), AGENT_ROUTES)
def test_bearer_token_on_an_agent_route_is_401_asking_for_the_certificate(
    shared_hub: HubProcess, method: str, path: str
):
    response = _call(shared_hub, method, path, shared_hub.admin_token)
    assert response.status_code == 401
    assert "agent routes need the agent's client certificate" in response.json()["detail"]


def test_revoked_api_token_is_401(shared_hub: HubProcess, admin: httpx.Client):
    created = admin.post("/tokens", json={"role": "viewer"}).json()
    assert admin.delete(f"/tokens/{created['id']}").status_code == 204
    with shared_hub.client(created["token"]) as revoked:
        response = revoked.get("/hosts")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_operator_cannot_create_api_tokens(shared_hub: HubProcess, admin: httpx.Client):
    operator = make_token(admin, "operator")
    with shared_hub.client(operator) as client:
        response = client.post("/tokens", json={"role": "admin"})
    assert response.status_code == 403 and "needs 'admin'" in response.json()["detail"]


def test_tokens_are_stored_hashed(shared_hub: HubProcess, admin: httpx.Client):
    import sqlite3

    token = make_token(admin, "viewer")
    secret = token.split("_", 2)[2]
    db = sqlite3.connect(shared_hub.data_dir / "aiorch.db")
    dump = "\n".join(db.iterdump())
    assert secret not in dump and shared_hub.admin_token.split("_", 2)[2] not in dump


def test_admin_token_file_is_private(shared_hub: HubProcess):
    assert (shared_hub.data_dir / "admin.token").stat().st_mode & 0o777 == 0o600
