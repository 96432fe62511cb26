"""Agent protocol v1 against a real hub: enroll, check-in with ETags, idempotent telemetry."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography import x509

from aiorch.hub.context import HubContext
from aiorch.hub.services import (
    agents,
    deployment_views,
    deployments,
    enrollment,
    images,
    metrics,
    status,
)
from aiorch.hub.services.heartbeats import Heartbeat
from edge_agent.contract.identity import TOKEN_PIN_SEPARATOR, agent_uri
from tests.fixtures_desired import a_workload
from tests.fixtures_hub import (
    HubProcess,
    checkin_body,
    enroll_agent,
    enroll_request,
    fresh_csr,
    make_enroll_token,
)


def _agent_client(hub: HubProcess, enrolled: dict) -> httpx.Client:
    return hub.client(enrolled["credential"])


def _post_enroll(hub: HubProcess, token: str, hostname: str) -> httpx.Response:
    """POST /enroll with a fresh key's CSR, the answer whatever it is."""
    _, body = enroll_request(token, hostname)
    with hub.client() as client:
        return client.post("/enroll", json=body)


def _unique(name: str) -> str:
    """A host name of its own for each case of a parametrized test on the shared hub: a name
    a live agent holds cannot be enrolled again without a replace token."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_enroll_returns_a_certificate_and_poll_interval(
    shared_hub: HubProcess, admin: httpx.Client
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "enroll-a")
    cert = x509.load_pem_x509_certificate(enrolled["certificate"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert names == [agent_uri(enrolled["agent_id"])], "the certificate names the new agent"
    assert enrolled["not_after"] > enrolled["hub_time"]
    assert "BEGIN CERTIFICATE" in enrolled["ca_bundle"]
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
        doc = {"workloads": [a_workload()]}
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


# Every refusal of an enrollment token is 401 (an expired, used-up or revoked token was 403).


def test_expired_token_is_refused_401_saying_expired(shared_hub: HubProcess, admin: httpx.Client):
    token = make_enroll_token(admin, ttl_s=0.001)
    response = _post_enroll(shared_hub, token, "late")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_used_up_token_is_refused_401_saying_used_up(shared_hub: HubProcess, admin: httpx.Client):
    token = make_enroll_token(admin, uses=1)
    enroll_agent(shared_hub, token, "once-a")
    response = _post_enroll(shared_hub, token, "once-b")
    assert response.status_code == 401
    assert "used up (1 of 1 uses)" in response.json()["detail"]


def test_revoked_token_is_refused_401_saying_revoked(shared_hub: HubProcess, admin: httpx.Client):
    created = admin.post("/enroll-tokens", json={"site": "edge1"}).json()
    assert admin.delete(f"/enroll-tokens/{created['id']}").status_code == 204
    response = _post_enroll(shared_hub, created["token"], "rev-a")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_unknown_token_is_refused(shared_hub: HubProcess):
    response = _post_enroll(shared_hub, "aie_00_nope", "x")
    assert response.status_code == 401
    assert "unknown enrollment token" in response.json()["detail"]


def test_reenrolling_a_held_host_is_409_naming_it_and_keeps_its_agent(
    shared_hub: HubProcess, admin: httpx.Client
):
    """A site token cannot take over a box that a live agent holds (it was a takeover)."""
    held = enroll_agent(shared_hub, make_enroll_token(admin), "held-a")
    response = _post_enroll(shared_hub, make_enroll_token(admin), "held-a")
    assert response.status_code == 409
    assert "host held-a is enrolled" in response.json()["detail"]
    assert "--host held-a --replace" in response.json()["detail"]
    with _agent_client(shared_hub, held) as agent:
        assert agent.post(f"/agents/{held['agent_id']}/checkin", json=checkin_body()).is_success
    assert admin.get("/hosts/held-a").json()["agent_id"] == held["agent_id"]


def test_reenrolling_a_host_with_a_replace_token_revokes_its_previous_agent(
    shared_hub: HubProcess, admin: httpx.Client
):
    old = enroll_agent(shared_hub, make_enroll_token(admin), "again-a")
    replace = make_enroll_token(admin, host="again-a", replace=True)
    new = enroll_agent(shared_hub, replace, "again-a")
    with _agent_client(shared_hub, old) as agent:
        response = agent.post(f"/agents/{old['agent_id']}/checkin", json=checkin_body())
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert admin.get("/hosts/again-a").json()["agent_id"] == new["agent_id"]


def test_enroll_into_another_sites_host_is_refused(shared_hub: HubProcess, admin: httpx.Client):
    enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "sited-a")
    response = _post_enroll(shared_hub, make_enroll_token(admin, "edge2"), "sited-a")
    assert response.status_code == 403
    assert "belongs to site edge1" in response.json()["detail"]


def test_secrets_never_reach_the_audit_log(shared_hub: HubProcess, admin: httpx.Client):
    """The enrollment token's secret is never stored; the agent's key never leaves it."""
    token = make_enroll_token(admin)
    enroll_agent(shared_hub, token, "audit-a")
    text = admin.get("/audit", params={"limit": 10_000}).text
    secret = token.partition(TOKEN_PIN_SEPARATOR)[0].split("_", 2)[2]
    assert secret not in text
    actions = {e["action"] for e in admin.get("/audit", params={"limit": 10_000}).json()}
    assert {"enroll_token.create", "agent.enroll"} <= actions


# ---- one hostile agent never breaks the hub or the fleet ----------------------------------


def _raw_post(client: httpx.Client, path: str, text: str) -> httpx.Response:
    """Post JSON text as written (httpx's json= refuses NaN and Infinity itself)."""
    return client.post(path, content=text, headers={"Content-Type": "application/json"})


def test_checkin_with_a_revision_past_64_bits_is_refused_and_others_check_in(
    shared_hub: HubProcess, admin: httpx.Client
):
    bad = enroll_agent(shared_hub, make_enroll_token(admin), "huge-rev")
    good = enroll_agent(shared_hub, make_enroll_token(admin), "good-rev")
    with _agent_client(shared_hub, bad) as agent:
        response = agent.post(
            f"/agents/{bad['agent_id']}/checkin", json=checkin_body(applied_revision=2**63)
        )
    assert response.status_code == 422 and "applied_revision" in response.json()["detail"]
    with _agent_client(shared_hub, good) as agent:
        assert agent.post(f"/agents/{good['agent_id']}/checkin", json=checkin_body()).is_success


@pytest.mark.parametrize(
    ("field", "value"), [("uptime_s", "NaN"), ("uptime_s", "Infinity"), ("uptime_s", "-1")]
)
def test_checkin_with_a_number_that_is_not_finite_is_refused(
    shared_hub: HubProcess, admin: httpx.Client, field: str, value: str
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), f"nan-{value.lower()}")
    text = json.dumps({**checkin_body(), field: 0}).replace(f'"{field}": 0', f'"{field}": {value}')
    with _agent_client(shared_hub, enrolled) as agent:
        response = _raw_post(agent, f"/agents/{enrolled['agent_id']}/checkin", text)
    assert response.status_code == 422 and field in response.json()["detail"]


@pytest.mark.parametrize(
    "report",
    [
        {"workloads": []},
        {"workloads": {"nlp/chat/0": "running"}},
        {"workloads": {"nlp/chat/0": {"state": "exploded"}}},
        {"revision": 2**64, "workloads": {}},
    ],
    ids=["list", "not-a-mapping", "unknown-state", "huge-revision"],
)
def test_malformed_workload_report_is_refused_and_fleet_views_still_answer(
    shared_hub: HubProcess, admin: httpx.Client, report: dict
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), _unique("bad-report"))
    with _agent_client(shared_hub, enrolled) as agent:
        response = agent.post(
            f"/agents/{enrolled['agent_id']}/checkin", json={**checkin_body(), "report": report}
        )
    assert response.status_code == 422 and "report" in response.json()["detail"]
    assert admin.get("/status").status_code == 200
    with shared_hub.client(shared_hub.admin_token, root=True) as scrape:
        assert scrape.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("sample", "words"),
    [
        ("[0, Infinity, 0, 1.0]", "samples.0.1"),
        ("[0, 1000.0, 0, NaN]", "samples.0.3"),
        ("[9223372036854775808, 1000.0, 0, 1.0]", "samples.0.0"),
    ],
    ids=["ts-infinity", "value-nan", "seq-past-64-bits"],
)
def test_telemetry_sample_out_of_bounds_is_refused_and_metrics_still_scrape(
    shared_hub: HubProcess, admin: httpx.Client, sample: str, words: str
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), _unique("bad-sample"))
    text = (
        '{"epoch": "e1", "seq_start": 0, "seq_end": 0, '
        '"series": [{"metric": "host_load1", "labels": {}}], "samples": [' + sample + "]}"
    )
    with _agent_client(shared_hub, enrolled) as agent:
        response = _raw_post(agent, f"/agents/{enrolled['agent_id']}/telemetry", text)
    assert response.status_code == 422 and words in response.json()["detail"]
    with shared_hub.client(shared_hub.admin_token, root=True) as scrape:
        assert scrape.get("/metrics").status_code == 200


def test_telemetry_label_name_prometheus_refuses_is_refused(
    shared_hub: HubProcess, admin: httpx.Client
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), _unique("hub-names"))
    series = {"metric": "host_load1", "labels": {"bad-name": "x"}}
    batch = {**_batch("e1", 0, 1), "series": [series]}
    with _agent_client(shared_hub, enrolled) as agent:
        response = agent.post(f"/agents/{enrolled['agent_id']}/telemetry", json=batch)
    assert response.status_code == 422 and "labels.bad-name" in response.json()["detail"]


def test_telemetry_series_named_like_the_hubs_own_is_dropped_not_the_batch(
    shared_hub: HubProcess, admin: httpx.Client
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), _unique("hub-names"))
    series = [{"metric": "aiorch_agents", "labels": {}}, {"metric": "host_load1", "labels": {}}]
    batch = {**_batch("e1", 0, 2), "series": series}
    batch["samples"][1][2] = 1  # the second sample is host_load1's
    with _agent_client(shared_hub, enrolled) as agent:
        response = agent.post(f"/agents/{enrolled['agent_id']}/telemetry", json=batch)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    assert response.json()["refused"] == [{"metric": "aiorch_agents", "reason": "reserved_name"}]
    with shared_hub.client(shared_hub.admin_token, root=True) as scrape:
        text = scrape.get("/metrics").text
    assert text.count("# TYPE aiorch_agents gauge") == 1


def test_enroll_as_a_host_named_like_an_ansible_group_is_refused(
    shared_hub: HubProcess, admin: httpx.Client
):
    token = make_enroll_token(admin)
    for name in ("all", "ungrouped", "a/b"):
        response = _post_enroll(shared_hub, token, name)
        assert response.status_code == 422 and "facts.hostname" in response.json()["detail"]
    assert admin.get("/inventory/export").status_code == 200


# ---- heartbeats and stored reports, at the service level ----------------------------------


def _enrolled(ctx: HubContext, *names: str) -> list[str]:
    token = enrollment.create_token(ctx, "dc1", 3600, 10, "user:t")["token"]
    return [
        enrollment.enroll(ctx, token, fresh_csr(), {"hostname": n}, "1")["agent_id"] for n in names
    ]


def _stored_revision(ctx: HubContext, agent_id: str) -> int:
    row = (
        ctx.store.read()
        .execute("SELECT applied_revision FROM agents WHERE id = ?", [agent_id])
        .fetchone()
    )
    return int(row[0])


def test_heartbeat_flush_stores_the_fleet_despite_one_bad_row(make_context):
    ctx = make_context()
    good, bad = _enrolled(ctx, "beat-good", "beat-bad")
    ctx.heartbeats.record(good, Heartbeat(ctx.clock(), "1", 1.0, "h", 7))
    ctx.heartbeats.record(bad, Heartbeat(ctx.clock(), "1", 1.0, "h", 2**64))  # bypassing 422
    assert ctx.heartbeats.flush(ctx.store) == 1
    assert _stored_revision(ctx, good) == 7


def test_failed_heartbeat_flush_requeues_unless_newer_beats_arrived(make_context):
    ctx = make_context()
    first, second = _enrolled(ctx, "beat-a", "beat-b")
    ctx.heartbeats.record(first, Heartbeat(ctx.clock(), "1", 1.0, "h", 3))
    ctx.heartbeats.record(second, Heartbeat(ctx.clock(), "1", 1.0, "h", 4))
    ctx.store.close()  # every write now fails
    with pytest.raises(RuntimeError):
        ctx.heartbeats.flush(ctx.store)
    ctx.heartbeats.record(second, Heartbeat(ctx.clock(), "1", 1.0, "h", 5))  # newer
    ctx.store.open()
    assert ctx.heartbeats.flush(ctx.store) == 2
    assert (_stored_revision(ctx, first), _stored_revision(ctx, second)) == (3, 5)


def test_one_hosts_unreadable_stored_report_leaves_the_others_views_whole(make_context):
    ctx = make_context()
    token = enrollment.create_token(ctx, "dc1", 3600, 10, "user:t")["token"]
    for name in ("report-a", "report-b"):
        enrollment.enroll(ctx, token, fresh_csr(), {"hostname": name, "cpu": {"logical": 8}}, "1")
    asyncio.run(images.store(ctx, "localhost/m:v1", _chunks(b"archive"), "t", 1 << 20))
    deployments.apply(ctx, _SPEC.format(replicas=2), "user:t")
    ctx.store.write(  # as a hub before reports were checked at the door could have stored
        lambda db: db.execute("UPDATE agents SET report = '[1, 2]' WHERE host_name = 'report-a'")
    )
    ctx.store.write(
        lambda db: db.execute(
            "UPDATE agents SET report = ? WHERE host_name = 'report-b'",
            [json.dumps({"workloads": {"nlp/chat/0": {"state": "healthy"},
                                       "nlp/chat/1": {"state": "healthy"}}})],
        )
    )  # fmt: skip
    states = {r["host"]: r["state"] for r in deployment_views.show(ctx, "chat")["replicas"]}
    assert states == {"report-a": "pending", "report-b": "healthy"}
    assert status.overview(ctx)["deployments"][0]["healthy"] == 1
    assert b'state="healthy"} 1.0' in metrics.render(ctx)


def test_reenrolled_host_gets_its_workloads_back_at_once(make_context):
    """The box was reinstalled: it enrolls again with a token made to replace its agent."""
    ctx = make_context()
    token = enrollment.create_token(ctx, "dc1", 3600, 10, "user:t")["token"]
    facts = {"hostname": "box-1", "cpu": {"logical": 8}}
    enrollment.enroll(ctx, token, fresh_csr(), facts, "1")
    asyncio.run(images.store(ctx, "localhost/m:v1", _chunks(b"archive"), "t", 1 << 20))
    deployments.apply(ctx, _SPEC.format(replicas=1), "user:t")
    replace = enrollment.create_token(ctx, "dc1", 3600, 1, "user:t", host="box-1", replace=True)
    again = enrollment.enroll(ctx, replace["token"], fresh_csr(), facts, "1")
    desired = agents.get_desired(ctx, again["agent_id"])
    assert [w["id"] for w in desired["document"]["workloads"]] == ["nlp/chat/0"]


_SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: chat, project: nlp}}
spec:
  image: localhost/m:v1
  replicas: {replicas}
"""


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
