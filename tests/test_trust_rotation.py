"""CA rotation in phases against a real hub: an agent checking in all along moves to the new
CA, and one offline through the whole rotation still comes back."""

from __future__ import annotations

from pathlib import Path

import httpx
from cryptography import x509

from edge_agent import identity
from edge_agent.client import HubRefused
from edge_agent.trust import Trust
from tests.fixtures_hub import HubProcess, checkin_body, enroll_agent, make_enroll_token


def _agent(hub: HubProcess, admin: httpx.Client, host: str, where: Path) -> Trust:
    enrolled = enroll_agent(hub, make_enroll_token(admin, "edge1"), host)
    held = identity.load(enrolled["credential"].path)
    assert held is not None
    identity.save(where / identity.IDENTITY_FILE, held.key, held.cert_pem)
    identity.save_bundle(where, hub.ca_path.read_text())
    return Trust(where, hub.url, enrolled["agent_id"], 10)


def _checkin(trust: Trust) -> None:
    """One check-in as the agent's loop does it: heal a refusal once, then carry on."""
    try:
        trust.hub.checkin(trust.agent_id, checkin_body(), 0)
    except HubRefused as refusal:
        assert trust.refused(refusal), f"agent could not recover from {refusal}"
        trust.hub.checkin(trust.agent_id, checkin_body(), 0)
    trust.accepted(trust.hub.news)


def test_rotation_moves_every_agent_to_the_new_ca_even_one_offline_throughout(
    hub: HubProcess, tmp_path: Path
) -> None:
    with hub.client(hub.admin_token) as admin:
        online = _agent(hub, admin, "rot-online", tmp_path / "online")
        asleep = _agent(hub, admin, "rot-asleep", tmp_path / "asleep")
        before = admin.get("/ca").json()
        old_pin = before["token_pin"]
        for phase in ("init", "update_clients", "update_servers", "standby"):
            answer = admin.post("/ca/rotate", json={"phase": phase})
            assert answer.status_code == 200, answer.text
            assert answer.json()["phase"] == phase
            _checkin(online)
            _checkin(online)  # a renewed pair on trial is promoted by its first use
        skipped = admin.post("/ca/rotate", json={"phase": "update_clients"})
        assert skipped.status_code == 409 and "next phase is init" in skipped.text
        after = admin.get("/ca").json()
    new_pin = after["token_pin"]
    assert new_pin != old_pin
    assert {ca["state"] for ca in after["cas"]} == {"active", "retired"}
    # The agent that was online holds a certificate from the new CA and trusts it.
    bundle = (tmp_path / "online" / identity.BUNDLE_FILE).read_text()
    assert identity.pinned(bundle, new_pin)
    new_ca = x509.load_pem_x509_certificate(identity.pinned(bundle, new_pin).encode())
    held = identity.load(tmp_path / "online" / identity.IDENTITY_FILE)
    assert held is not None
    held.cert.verify_directly_issued_by(new_ca)
    # The one asleep through it all still trusts only the old CA, and comes back.
    _checkin(asleep)
    _checkin(asleep)
    woken = identity.load(tmp_path / "asleep" / identity.IDENTITY_FILE)
    assert woken is not None
    woken.cert.verify_directly_issued_by(new_ca)
    # The CLI's bundle follows: only the new CA is trusted now.
    assert identity.pinned(hub.ca_path.read_text(), new_pin)
    assert len(identity.bundle_certs(hub.ca_path.read_text())) == 1
    online.close()
    asleep.close()
