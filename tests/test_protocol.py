"""Agent protocol v1 against a real hub: enroll, check-in with ETags, idempotent telemetry."""

from __future__ import annotations

import httpx

from tests.fixtures_hub import HubProcess, checkin_body, enroll_agent, make_enroll_token


def _agent_client(hub: HubProcess, enrolled: dict) -> httpx.Client:
    return hub.client(enrolled["credential"])


def test_enroll_returns_credential_and_poll_interval(shared_hub: HubProcess, admin: httpx.Client):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "enroll-a")
    assert enrolled["credential"].startswith("aia_")
    assert enrolled["site"] == "edge1"
    assert enrolled["poll_interval_s"] > 0
    host = admin.get("/hosts/enroll-a").json()
    assert host["site"] == "edge1" and host["agent_id"] == enrolled["agent_id"]


def test_checkin_is_304_while_desired_state_unchanged(shared_hub: HubProcess, admin: httpx.Client):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), "etag-a")
    path = f"/agents/{enrolled['agent_id']}/checkin"
    with _agent_client(shared_hub, enrolled) as agent:
        first = agent.post(path, json=checkin_body())
        assert first.status_code == 200
        assert first.json()["desired"] == {"workloads": []}
        etag = first.headers["ETag"]
        again = agent.post(path, json=checkin_body(), headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert float(again.headers["X-Aiorch-Poll-Interval"]) > 0


def test_new_revision_after_desired_state_changes(shared_hub: HubProcess, admin: httpx.Client):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), "etag-b")
    agent_id = enrolled["agent_id"]
    with _agent_client(shared_hub, enrolled) as agent:
        etag = agent.post(f"/agents/{agent_id}/checkin", json=checkin_body()).headers["ETag"]
        doc = {"workloads": [{"name": "llm", "image": "sha256:abc"}]}
        put = admin.put(f"/agents/{agent_id}/desired", json={"document": doc})
        assert put.status_code == 200 and put.json()["revision"] == 1
        changed = agent.post(
            f"/agents/{agent_id}/checkin", json=checkin_body(), headers={"If-None-Match": etag}
        )
        assert changed.status_code == 200
        assert changed.json() == {"revision": 1, "desired": doc, "poll_interval_s": 30.0}
        assert changed.headers["ETag"] == '"1"'
    same = admin.put(f"/agents/{agent_id}/desired", json={"document": doc})
    assert same.json()["revision"] == 1, "an identical document must not bump the revision"


def test_checkin_records_heartbeat_fields(shared_hub: HubProcess, admin: httpx.Client):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), "beat-a")
    body = {**checkin_body(applied_revision=0), "agent_version": "9.9", "uptime_s": 42.5}
    with _agent_client(shared_hub, enrolled) as agent:
        assert agent.post(f"/agents/{enrolled['agent_id']}/checkin", json=body).status_code == 200
    row = admin.get(f"/agents/{enrolled['agent_id']}").json()
    assert (row["agent_version"], row["uptime_s"], row["status"]) == ("9.9", 42.5, "online")


def _batch(epoch: str, start: int, count: int) -> dict:
    samples = [[start + i, 1000.0 + i, 0, float(i)] for i in range(count)]
    return {
        "epoch": epoch,
        "seq_start": start,
        "seq_end": start + count - 1,
        "series": [{"metric": "host_load1", "labels": {}}],
        "samples": samples,
    }


def test_telemetry_batch_sent_twice_is_stored_once_and_acked_twice(
    shared_hub: HubProcess, admin: httpx.Client
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), "tele-a")
    path = f"/agents/{enrolled['agent_id']}/telemetry"
    with _agent_client(shared_hub, enrolled) as agent:
        first = agent.post(path, json=_batch("e1", 0, 10)).json()
        second = agent.post(path, json=_batch("e1", 0, 10)).json()
        grown = agent.post(path, json=_batch("e1", 0, 15)).json()
    assert first == {"epoch": "e1", "acked_through": 9, "stored": 10, "duplicate": False}
    assert second == {"epoch": "e1", "acked_through": 9, "stored": 0, "duplicate": True}
    assert grown["stored"] == 5 and grown["acked_through"] == 14


def test_telemetry_batch_with_sample_outside_its_range_is_refused(
    shared_hub: HubProcess, admin: httpx.Client
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), "tele-b")
    bad = {**_batch("e1", 0, 3), "seq_end": 1}
    with _agent_client(shared_hub, enrolled) as agent:
        response = agent.post(f"/agents/{enrolled['agent_id']}/telemetry", json=bad)
    assert response.status_code == 422
    assert "outside the batch range" in response.json()["detail"]


def test_telemetry_sample_naming_a_missing_series_is_refused(
    shared_hub: HubProcess, admin: httpx.Client
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), "tele-c")
    bad = _batch("e1", 0, 2)
    bad["samples"][1][2] = 5
    with _agent_client(shared_hub, enrolled) as agent:
        response = agent.post(f"/agents/{enrolled['agent_id']}/telemetry", json=bad)
    assert response.status_code == 422
    assert "names series 5; the batch has 1" in response.json()["detail"]


def test_expired_token_is_refused_saying_expired(shared_hub: HubProcess, admin: httpx.Client):
    token = make_enroll_token(admin, ttl_s=0.001)
    with shared_hub.client() as client:
        response = client.post("/enroll", json={"token": token, "facts": {"hostname": "late"}})
    assert response.status_code == 403
    assert "expired" in response.json()["detail"]


def test_used_up_token_is_refused_saying_used_up(shared_hub: HubProcess, admin: httpx.Client):
    token = make_enroll_token(admin, uses=1)
    enroll_agent(shared_hub, token, "once-a")
    with shared_hub.client() as client:
        response = client.post("/enroll", json={"token": token, "facts": {"hostname": "once-b"}})
    assert response.status_code == 403
    assert "used up (1 of 1 uses)" in response.json()["detail"]


def test_revoked_token_is_refused_saying_revoked(shared_hub: HubProcess, admin: httpx.Client):
    created = admin.post("/enroll-tokens", json={"site": "edge1"}).json()
    assert admin.delete(f"/enroll-tokens/{created['id']}").status_code == 204
    with shared_hub.client() as client:
        response = client.post(
            "/enroll", json={"token": created["token"], "facts": {"hostname": "rev-a"}}
        )
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]


def test_unknown_token_is_refused(shared_hub: HubProcess):
    with shared_hub.client() as client:
        response = client.post("/enroll", json={"token": "aie_00_nope", "facts": {"hostname": "x"}})
    assert response.status_code == 401
    assert "unknown enrollment token" in response.json()["detail"]


def test_reenrolling_a_host_revokes_its_previous_credential(
    shared_hub: HubProcess, admin: httpx.Client
):
    old = enroll_agent(shared_hub, make_enroll_token(admin), "again-a")
    new = enroll_agent(shared_hub, make_enroll_token(admin), "again-a")
    with _agent_client(shared_hub, old) as agent:
        response = agent.post(f"/agents/{old['agent_id']}/checkin", json=checkin_body())
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert admin.get("/hosts/again-a").json()["agent_id"] == new["agent_id"]


def test_enroll_into_another_sites_host_is_refused(shared_hub: HubProcess, admin: httpx.Client):
    enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "sited-a")
    with shared_hub.client() as client:
        response = client.post(
            "/enroll",
            json={"token": make_enroll_token(admin, "edge2"), "facts": {"hostname": "sited-a"}},
        )
    assert response.status_code == 403
    assert "belongs to site edge1" in response.json()["detail"]


def test_secrets_never_reach_the_audit_log(shared_hub: HubProcess, admin: httpx.Client):
    token = make_enroll_token(admin)
    enrolled = enroll_agent(shared_hub, token, "audit-a")
    text = admin.get("/audit", params={"limit": 10_000}).text
    assert token.split("_", 2)[2] not in text
    assert enrolled["credential"].split("_", 2)[2] not in text
    actions = {e["action"] for e in admin.get("/audit", params={"limit": 10_000}).json()}
    assert {"enroll_token.create", "agent.enroll"} <= actions
