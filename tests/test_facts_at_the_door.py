"""Facts are checked where they enter (enrollment and check-in) against a real hub: a bad
field is a 422 naming it, nothing of it is stored, and the hub keeps answering everyone."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fixtures_hub import HubProcess, checkin_body, enroll_agent, fresh_csr, make_enroll_token

pytestmark = pytest.mark.e2e

GPU = {"index": 0, "name": "NVIDIA L40S", "memory_total_bytes": 46068 * 2**20, "simulated": True}
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {name: door, project: nlp}
spec:
  image: localhost/door:v1
  resources: {cpu: 1}
"""
# (what is wrong, the facts as JSON text, the field the 422 names)
BAD_FACTS = [
    ("wrong type", '{"gpus": [{"index": "zero", "name": "x"}]}', "gpus[0].index"),
    ("NaN", '{"memory_total_bytes": NaN}', "memory_total_bytes"),
    ("Infinity", '{"disks": [{"total_bytes": Infinity}]}', "disks[0].total_bytes"),
    ("absurd memory", f'{{"memory_total_bytes": {10**30}}}', "memory_total_bytes"),
    ("absurd GPU", f'{{"gpus": [{{"index": 0, "name": "x", "memory_total_bytes": {2**60}}}]}}',
     "gpus[0].memory_total_bytes"),
    ("runtime not text", '{"container_runtime": 7}', "container_runtime"),
    ("cpus not a count", '{"cpu": {"logical_count": 2.5}}', "cpu.logical_count"),
]  # fmt: skip


def _with_hostname(facts_json: str, hostname: str) -> str:
    return facts_json.replace("{", f'{{"hostname": "{hostname}", ', 1)


def _fleet_still_answers(admin: httpx.Client) -> None:
    for path in ("/hosts", "/status"):
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text)
    plan = admin.post("/deployments/plan", json={"spec": SPEC})
    assert plan.status_code == 200, plan.text


@pytest.mark.parametrize(("what", "facts", "field"), BAD_FACTS, ids=[b[0] for b in BAD_FACTS])
def test_enrolling_with_bad_facts_is_422_naming_the_field(
    shared_hub: HubProcess, admin: httpx.Client, what: str, facts: str, field: str
) -> None:
    hostname = "door-" + what.replace(" ", "-")
    token = make_enroll_token(admin)
    csr = json.dumps(fresh_csr())  # a valid CSR: the facts alone are what is wrong
    body = f'{{"token": "{token}", "csr": {csr}, "facts": {_with_hostname(facts, hostname)}}}'
    with shared_hub.client() as client:
        response = client.post(
            "/enroll", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"] and "csr" not in response.json()["detail"]
    assert admin.get(f"/hosts/{hostname}").status_code == 404
    _fleet_still_answers(admin)


@pytest.mark.parametrize(("what", "facts", "field"), BAD_FACTS, ids=[b[0] for b in BAD_FACTS])
def test_checking_in_with_bad_facts_is_422_and_keeps_the_stored_ones(
    shared_hub: HubProcess, admin: httpx.Client, what: str, facts: str, field: str
) -> None:
    hostname = "beat-" + what.replace(" ", "-")
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), hostname)
    path = f"/agents/{enrolled['agent_id']}/checkin"
    good: dict[str, Any] = {"hostname": hostname, "gpus": [GPU], "container_runtime": "podman"}
    with shared_hub.client(enrolled["credential"]) as agent:
        first = agent.post(path, json={**checkin_body(), "facts": good})
        assert first.status_code == 200, first.text
        bad = json.dumps(checkin_body())[:-1] + f', "facts": {facts}}}'
        response = agent.post(path, content=bad, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"]
        assert agent.post(path, json=checkin_body()).status_code == 200
    assert admin.get(f"/hosts/{hostname}").json()["facts"] == good
    listed = {h["name"]: h for h in admin.get("/hosts").json()}
    assert (listed[hostname]["gpus"], listed[hostname]["gpus_simulated"]) == (1, True)
    _fleet_still_answers(admin)
