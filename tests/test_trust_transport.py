"""Transport trust against a real hub under uvicorn: HTTPS only, agents by client certificate
on every request, and what the TLS layer refuses (expired, not yet valid, foreign CA) reaching
the agent as a refused credential, which it heals by renewing."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiorch.errors import UserError
from aiorch.hub.pki.authority import new_ca, spki_pin
from edge_agent import identity
from edge_agent.client import CredentialRejected, HubClient
from edge_agent.contract.identity import agent_uri
from edge_agent.trust import Trust
from tests.fixtures_hub import (
    AGENT,
    HubProcess,
    checkin_body,
    enroll_agent,
    enroll_request,
    make_enroll_token,
)

DAY = 86400.0


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _cert(
    agent_id: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    not_before: float,
    not_after: float,
) -> x509.Certificate:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(agent_uri(agent_id))])
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(not_before, dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(not_after, dt.UTC))
        .add_extension(san, False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip


def _hub_ca(hub: HubProcess) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((hub.data_dir / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate((hub.data_dir / "ca.pem").read_bytes())


def _agent_with(hub: HubProcess, path: Path, agent_id: str) -> HubClient:
    held = identity.load(path)
    anonymous = identity.tls_context(hub.ca_path, None, None)
    return HubClient(hub.url, identity.tls_context(hub.ca_path, None, held), 10, anonymous)


def _assert_refused(
    hub: HubProcess,
    where: Path,
    agent_id: str,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
) -> None:
    """An agent presenting `cert` is told its certificate was refused, not that the hub is away."""
    path = where / "identity.pem"
    identity.save(path, key, cert.public_bytes(serialization.Encoding.PEM).decode())
    client = _agent_with(hub, path, agent_id)
    with pytest.raises(CredentialRejected, match="refused this agent's certificate"):
        client.checkin(agent_id, checkin_body(), 0)
    client.close()


def _record(hub: HubProcess, agent_id: str, cert: x509.Certificate) -> None:
    """Tell the hub it issued `cert` (as if it had, months ago)."""
    with sqlite3.connect(hub.data_dir / "aiorch.db") as db:
        ca_id = db.execute("SELECT id FROM hub_cas WHERE state = 'active'").fetchone()[0]
        db.execute(
            "INSERT INTO agent_certs VALUES (?, ?, ?, ?, ?, ?, ?, 'enroll', NULL)",
            [
                format(cert.serial_number, "x"),
                agent_id,
                ca_id,
                spki_pin(cert),
                cert.not_valid_before_utc.timestamp(),
                cert.not_valid_after_utc.timestamp(),
                _now() - 60 * DAY,
            ],
        )


def test_plain_http_on_the_https_port_gets_no_answer(shared_hub: HubProcess) -> None:
    with socket.create_connection(("127.0.0.1", shared_hub.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        answer = sock.recv(1024)
    assert not answer.startswith(b"HTTP/")


def test_the_cli_refuses_a_plain_http_hub_url(shared_hub: HubProcess) -> None:
    result = shared_hub.cli(
        "--hub", f"http://127.0.0.1:{shared_hub.port}", "agents", "list", check=False
    )
    assert result.returncode != 0 and "HTTPS only" in result.stderr


def test_agents_are_who_their_certificate_says_and_reach_only_their_own_routes(
    shared_hub: HubProcess, admin: httpx.Client
) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-a")
    other = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-b")
    with shared_hub.client(mine["credential"]) as agent:
        assert (
            agent.post(f"/agents/{mine['agent_id']}/checkin", json=checkin_body()).status_code
            == 200
        )
        theirs = agent.post(f"/agents/{other['agent_id']}/checkin", json=checkin_body())
        assert theirs.status_code == 403 and "only its own" in theirs.text
        assert agent.get("/agents").status_code == 401  # a certificate is no API token
    with shared_hub.client("aia_x_y") as bearer:
        refused = bearer.post(f"/agents/{mine['agent_id']}/checkin", json=checkin_body())
    assert refused.status_code == 401 and "client certificate" in refused.text


def test_revocation_takes_effect_on_the_next_request_of_a_kept_alive_connection(
    shared_hub: HubProcess, admin: httpx.Client
) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-revoked")
    with shared_hub.client(mine["credential"]) as agent:
        url = f"/agents/{mine['agent_id']}/checkin"
        assert agent.post(url, json=checkin_body()).status_code == 200
        assert admin.post(f"/agents/{mine['agent_id']}/revoke").status_code == 200
        refused = agent.post(url, json=checkin_body())  # same pooled connection
    assert refused.status_code == 401 and "revoked" in refused.text


@pytest.mark.parametrize(
    "window,why",
    [((-40 * DAY, -10 * DAY), "expired"), ((+DAY, +30 * DAY), "not yet valid")],
)
def test_a_certificate_out_of_its_validity_is_refused_by_tls_as_a_credential(
    shared_hub: HubProcess, admin: httpx.Client, tmp_path: Path, window: tuple, why: str
) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), f"trust-{why[:3]}")
    held = identity.load(mine["credential"].path)
    assert held is not None
    ca_key, ca_cert = _hub_ca(shared_hub)
    now = _now()
    cert = _cert(mine["agent_id"], held.key, ca_key, ca_cert, now + window[0], now + window[1])
    _assert_refused(shared_hub, tmp_path, mine["agent_id"], held.key, cert)


def test_a_certificate_from_another_ca_is_refused(
    shared_hub: HubProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-foreign")
    held = identity.load(mine["credential"].path)
    assert held is not None
    now = _now()
    foreign_key, foreign_ca = new_ca(now, "impostor")
    cert = _cert(mine["agent_id"], held.key, foreign_key, foreign_ca, now - 300, now + DAY)
    _assert_refused(shared_hub, tmp_path, mine["agent_id"], held.key, cert)


def test_an_agent_offline_past_expiry_renews_by_proof_and_carries_on(
    shared_hub: HubProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-offline")
    held = identity.load(mine["credential"].path)
    assert held is not None
    ca_key, ca_cert = _hub_ca(shared_hub)
    now = _now()
    old = _cert(mine["agent_id"], held.key, ca_key, ca_cert, now - 70 * DAY, now - 40 * DAY)
    _record(shared_hub, mine["agent_id"], old)
    state = tmp_path / "state"
    identity.save(
        state / identity.IDENTITY_FILE,
        held.key,
        old.public_bytes(serialization.Encoding.PEM).decode(),
    )
    identity.save_bundle(state, shared_hub.ca_path.read_text())
    trust = Trust(state, shared_hub.url, mine["agent_id"], 10)
    with pytest.raises(CredentialRejected) as refused:
        trust.hub.checkin(mine["agent_id"], checkin_body(), 0)
    assert trust.refused(refused.value)  # renewed by proof: a new pair to try
    trust.hub.checkin(mine["agent_id"], checkin_body(), 0)
    trust.accepted(trust.hub.news)
    current = identity.load(state / identity.IDENTITY_FILE)
    assert current is not None and current.not_after > now + 29 * DAY
    assert not (state / identity.NEXT_FILE).exists()
    trust.close()


def test_rekey_makes_the_agent_renew_with_a_fresh_key_at_its_next_check_in(
    shared_hub: HubProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-rekey")
    state = tmp_path / "state"
    held = identity.load(mine["credential"].path)
    assert held is not None
    identity.save(state / identity.IDENTITY_FILE, held.key, held.cert_pem)
    identity.save_bundle(state, shared_hub.ca_path.read_text())
    trust = Trust(state, shared_hub.url, mine["agent_id"], 10)
    assert admin.post(f"/agents/{mine['agent_id']}/rekey").status_code == 200
    trust.hub.checkin(mine["agent_id"], checkin_body(), 0)
    trust.accepted(trust.hub.news)
    assert (state / identity.NEXT_FILE).exists(), "the renewed pair waits for its first use"
    trust.hub.checkin(mine["agent_id"], checkin_body(), 0)
    trust.accepted(trust.hub.news)
    renewed = identity.load(state / identity.IDENTITY_FILE)
    assert renewed is not None and renewed.cert.serial_number != held.cert.serial_number
    assert renewed.key.public_key().public_numbers() != held.key.public_key().public_numbers()
    trust.close()


def test_an_agent_refuses_a_hub_whose_ca_is_not_the_pinned_one_and_sends_no_token(
    shared_hub: HubProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    created = admin.post("/enroll-tokens", json={"site": "edge1"}).json()
    wrong_pin = created["token"][:-8] + "00000000"
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps({"state_dir": str(tmp_path / "s"), "gpu_backend": "none"}))
    result = subprocess.run(
        [AGENT, "enroll", "--hub", shared_hub.url, "--config", str(config)],
        input=wrong_pin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "is not the one the token pins" in result.stderr and "not sending" in result.stderr
    assert created["secret"] not in result.stderr
    tokens = {t["id"]: t for t in admin.get("/enroll-tokens").json()}
    assert tokens[created["id"]]["uses"] == 0


def test_concurrent_uses_of_a_one_use_token_give_exactly_one_certificate(
    shared_hub: HubProcess, admin: httpx.Client
) -> None:
    token = make_enroll_token(admin, "edge1")

    def attempt(n: int) -> int:
        _, body = enroll_request(token, f"race-{n}")
        with shared_hub.client() as client:
            return client.post("/enroll", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(attempt, range(8)))
    assert codes == [201] + [401] * 7


def test_a_renewal_lost_before_it_was_saved_leaves_the_old_pair_working(
    shared_hub: HubProcess, admin: httpx.Client
) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-crash")
    with shared_hub.client(mine["credential"]) as agent:
        csr = identity.csr_pem(identity.new_key())
        renewed = agent.post(f"/agents/{mine['agent_id']}/renew", json={"csr": csr})
        assert renewed.status_code == 200  # ... and the agent crashed before writing it down
        again = agent.post(f"/agents/{mine['agent_id']}/checkin", json=checkin_body())
    assert again.status_code == 200, "the old certificate stays valid until it expires"


def _handshake(hub: HubProcess, highest: ssl.TLSVersion) -> str:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(hub.ca_path)
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client would speak TLS 1.0/1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = highest
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    with sock, client.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        return str(tls.version())


def test_a_client_below_tls_1_2_is_refused_by_the_hub(shared_hub: HubProcess) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        too_old = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(shared_hub, too_old)
    assert _handshake(shared_hub, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"  # the same client, 1.2


@pytest.mark.parametrize("key", ["ca.key", "tls/server.key"])
def test_the_hub_will_not_start_with_a_private_key_others_can_read(
    hub: HubProcess, key: str
) -> None:
    hub.stop()
    os.chmod(hub.data_dir / key, 0o644)
    with pytest.raises(UserError, match=rf"{re.escape(key)} has mode 0644: .*chmod 600"):
        HubProcess(hub.data_dir, hub.port).start()


def test_the_agents_key_is_private(shared_hub: HubProcess, admin: httpx.Client) -> None:
    mine = enroll_agent(shared_hub, make_enroll_token(admin, "edge1"), "trust-mode")
    assert mine["credential"].path.stat().st_mode & 0o777 == 0o600


def test_the_hub_stops_at_once_with_agents_kept_alive(hub: HubProcess) -> None:
    """A TLS close waits for the peer's close_notify (30 s): idle connections are dropped."""
    with hub.client(hub.admin_token) as admin:
        mine = enroll_agent(hub, make_enroll_token(admin, "edge1"), "trust-stop")
    with hub.client(mine["credential"]) as agent:  # its connection stays open, idle
        assert agent.post(f"/agents/{mine['agent_id']}/checkin", json=checkin_body()).is_success
        started = time.monotonic()
        hub.stop()
        assert time.monotonic() - started < 10
