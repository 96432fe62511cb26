"""Bad input gets a 4xx that names the problem, never a 500, and stores nothing."""

from __future__ import annotations

import httpx

from tests.fixtures_hub import HubProcess


def _tokens(admin: httpx.Client) -> list:
    return admin.get("/enroll-tokens").json()


def test_bad_json_is_422(shared_hub: HubProcess, admin: httpx.Client):
    before = _tokens(admin)
    response = admin.post(
        "/enroll-tokens", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    assert _tokens(admin) == before


def test_missing_field_is_422_naming_it(admin: httpx.Client):
    response = admin.post("/enroll-tokens", json={"ttl_s": 60})
    assert response.status_code == 422 and "body.site" in response.json()["detail"]


def test_unknown_field_is_422_naming_it(admin: httpx.Client):
    response = admin.post("/enroll-tokens", json={"site": "edge1", "colour": "red"})
    assert response.status_code == 422 and "colour" in response.json()["detail"]


def test_wrong_content_type_is_415(admin: httpx.Client):
    response = admin.post(
        "/enroll-tokens", content=b"site=edge1", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415 and "text/plain" in response.json()["detail"]


def test_oversized_body_is_413(admin: httpx.Client):
    huge = b'{"site": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    response = admin.post(
        "/enroll-tokens", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_oversized_chunked_body_is_413(admin: httpx.Client):
    def chunks():
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    response = admin.post(
        "/enroll-tokens", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_bad_site_name_is_422(admin: httpx.Client):
    response = admin.post("/enroll-tokens", json={"site": "no spaces allowed"})
    assert response.status_code == 422 and "body.site" in response.json()["detail"]


def test_revoking_unknown_token_is_404(admin: httpx.Client):
    response = admin.delete("/tokens/doesnotexist")
    assert response.status_code == 404 and "doesnotexist" in response.json()["detail"]


def test_desired_state_for_unknown_agent_is_404(admin: httpx.Client):
    response = admin.put("/agents/nobody/desired", json={"document": {}})
    assert response.status_code == 404 and "nobody" in response.json()["detail"]


def test_enroll_without_hostname_is_422(shared_hub: HubProcess, admin: httpx.Client):
    token = admin.post("/enroll-tokens", json={"site": "edge1"}).json()["token"]
    with shared_hub.client() as client:
        response = client.post("/enroll", json={"token": token, "facts": {}})
    assert response.status_code == 422 and "hostname" in response.json()["detail"]
    listed = [t for t in admin.get("/enroll-tokens").json() if token.split("_")[1] == t["id"]]
    assert listed[0]["uses"] == 0, "a refused enrollment spends no use of the token"


def test_rollout_of_unknown_deployment_is_404(admin: httpx.Client):
    response = admin.get("/deployments/nope/rollout")
    assert response.status_code == 404 and "nope" in response.json()["detail"]
    assert admin.post("/deployments/nope/rollout/pause").status_code == 404


def test_unknown_rollout_action_is_422(admin: httpx.Client):
    response = admin.post("/deployments/nope/rollout/explode")
    assert response.status_code == 422 and "action" in response.json()["detail"]
