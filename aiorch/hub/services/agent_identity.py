"""Agents are who their client certificate says, checked on every request; and they renew it.

The TLS layer has verified the certificate (a hub CA signed it, it is within its validity).
Here, per request, the hub checks that it issued exactly that certificate (serial and key),
that neither it nor its agent is revoked, and that the agent asks only for its own resources.
Revocation thus takes effect on the next request, kept-alive or resumed session alike, with no
CRL to expire.

Renewal has two doors. A working certificate renews over mTLS with a fresh key. One the TLS
layer no longer accepts (expired while the site was offline, or issued by a retired CA) renews
by proof: the agent signs a one-use nonce and its new CSR with the old key, and the hub accepts
that within the site's grace window (step-ca's renew-after-expiry).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlite_utils
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from aiorch.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from aiorch.hub.context import HubContext
from aiorch.hub.pki.authority import Issued, parse_csr, spki_pin
from aiorch.hub.services import audit
from edge_agent.contract.identity import agent_id_of_uri, proof_message

NONCE_TTL_S = 300.0
_NONCE_KEY = secrets.token_bytes(32)  # per process: a nonce from before a restart just fails


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    serial: str
    ca_id: str  # the CA that signed the certificate
    rekey: bool  # an operator asked for a renewal with a fresh key


@dataclass(frozen=True)
class _Names:
    agent_id: str | None
    serial: str
    pin: str


def _names_of(cert: x509.Certificate) -> _Names:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    agent = agent_id_of_uri(uris[0]) if len(uris) == 1 else None
    return _Names(agent, format(cert.serial_number, "x"), spki_pin(cert))


@lru_cache(maxsize=8192)
def _names(der: bytes) -> _Names:
    """Parsed once per certificate: a kept-alive agent sends the same one every request."""
    return _names_of(x509.load_der_x509_certificate(der))


def _peer_der(scope: Mapping[str, Any]) -> bytes | None:
    tls = scope.get("extensions", {}).get("tls") or {}
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) and der else None


def authenticate(ctx: HubContext, scope: Mapping[str, Any], agent_id: str) -> AgentIdentity:
    """The agent on this connection, once proven to be `agent_id` (401 first, then 403)."""
    der = _peer_der(scope)
    if der is None:
        raise Unauthorized("agent routes need the agent's client certificate (enroll first)")
    names = _names(der)
    if names.agent_id is None:
        raise Unauthorized("the client certificate names no aiorch agent")
    row = (
        ctx.store.read()
        .execute(
            "SELECT c.agent_id, c.spki_pin, c.revoked_at, a.revoked_at, a.rekey_requested, "
            "h.state, c.ca_id FROM agent_certs c JOIN agents a ON a.id = c.agent_id "
            "JOIN hub_cas h ON h.id = c.ca_id WHERE c.serial = ?",
            [names.serial],
        )
        .fetchone()
    )
    if row is None or row[0] != names.agent_id or row[1] != names.pin:
        raise Unauthorized("the client certificate was not issued by this hub")
    if row[2] is not None or row[3] is not None:
        raise Unauthorized(f"agent {names.agent_id} has been revoked")
    if row[5] == "retired":
        raise Unauthorized("the client certificate is from a retired CA: renew by proof")
    if names.agent_id != agent_id:
        raise Forbidden(f"agent {names.agent_id} may use only its own endpoints, not {agent_id}'s")
    return AgentIdentity(names.agent_id, names.serial, row[6], bool(row[4]))


def record_cert(
    db: sqlite_utils.Database, agent_id: str, issued: Issued, how: str, now: float
) -> None:
    db.table("agent_certs").insert(
        {
            "serial": issued.serial,
            "agent_id": agent_id,
            "ca_id": issued.ca_id,
            "spki_pin": issued.spki_pin,
            "not_before": issued.not_before,
            "not_after": issued.not_after,
            "issued_at": now,
            "how": how,
            "revoked_at": None,
        }
    )


def issued_answer(ctx: HubContext, agent_id: str, issued: Issued) -> dict[str, Any]:
    """What every issuance answers: the certificate, the CAs to verify the hub by, the key
    its audit checkpoints are signed with, and the hub's time."""
    return {
        "agent_id": agent_id,
        "certificate": issued.pem,
        "not_after": issued.not_after,
        "ca_bundle": ctx.authority.bundle_pem(),
        "audit_public_key": ctx.audit_key.public_pem.decode(),
        "hub_time": ctx.clock(),
    }


def _renew(ctx: HubContext, agent_id: str, csr_pem: str, how: str, actor: str) -> dict[str, Any]:
    csr = parse_csr(csr_pem)
    now = ctx.clock()
    issued = ctx.authority.issue_agent(agent_id, csr, now, ctx.settings.agent_cert_lifetime_s)

    def op(db: sqlite_utils.Database) -> None:
        revoked = db.execute("SELECT revoked_at FROM agents WHERE id = ?", [agent_id]).fetchone()
        if revoked is None or revoked[0] is not None:
            raise Unauthorized(f"agent {agent_id} has been revoked")
        record_cert(db, agent_id, issued, how, now)
        db.execute("UPDATE agents SET rekey_requested = 0 WHERE id = ?", [agent_id])
        detail = {"serial": issued.serial, "ca": issued.ca_id, "how": how}
        audit.record(db, actor, "agent.renew", f"agent:{agent_id}", detail, ts=now)

    ctx.store.write(op)
    return issued_answer(ctx, agent_id, issued)


def renew(ctx: HubContext, identity: AgentIdentity, csr_pem: str) -> dict[str, Any]:
    """A new certificate for a fresh key, over a working mTLS connection. The old one stays
    valid until it expires: the agent drops it once the new one has worked."""
    actor = f"agent:{identity.agent_id}"
    return _renew(ctx, identity.agent_id, csr_pem, "renew", actor)


def issue_nonce(ctx: HubContext) -> dict[str, Any]:
    """A one-use nonce for a renewal by proof; stateless until used, so handing them out to
    anyone costs the hub no storage."""
    expires = ctx.clock() + NONCE_TTL_S
    body = f"{expires:.0f}.{secrets.token_hex(16)}"
    tag = hmac.new(_NONCE_KEY, body.encode(), hashlib.sha256).hexdigest()[:32]
    return {"nonce": f"{body}.{tag}", "expires_at": expires}


def _spend_nonce(db: sqlite_utils.Database, nonce: str, now: float) -> None:
    body, _, tag = nonce.rpartition(".")
    good = hmac.new(_NONCE_KEY, body.encode(), hashlib.sha256).hexdigest()[:32]
    expires_text = body.partition(".")[0]
    if not hmac.compare_digest(tag, good) or not expires_text.isdigit():
        raise Unauthorized("unknown renewal nonce: get a fresh one")
    if float(expires_text) < now:
        raise Unauthorized("the renewal nonce has expired: get a fresh one")
    db.execute("DELETE FROM used_nonces WHERE expires_at < ?", [now])
    cur = db.execute(
        "INSERT INTO used_nonces (nonce, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [nonce, float(expires_text)],
    )
    if cur.rowcount != 1:
        raise Unauthorized("the renewal nonce was already used")


def _grace_s(ctx: HubContext, db: sqlite_utils.Database, agent_id: str) -> float:
    row = db.execute(
        "SELECT s.offline_grace_s FROM agents a LEFT JOIN sites s ON s.name = a.site "
        "WHERE a.id = ?",
        [agent_id],
    ).fetchone()
    site_grace = row[0] if row else None
    return float(site_grace) if site_grace is not None else ctx.settings.agent_offline_grace_s


def renew_by_proof(
    ctx: HubContext, cert_pem: str, csr_pem: str, nonce: str, signature_b64: str
) -> dict[str, Any]:
    """Renew a certificate the TLS layer refuses, by proof of its key, within the grace window
    past its expiry. Past it, or revoked, the agent needs a new enrollment token."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        raise InvalidInput("certificate must be PEM and signature base64") from None
    csr = parse_csr(csr_pem)
    names = _names_of(cert)
    if ctx.authority.issuer_of(cert) is None or names.agent_id is None:
        raise Unauthorized("the certificate was not issued by this hub")
    agent_id = names.agent_id
    try:
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, proof_message(nonce, csr_pem), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, AssertionError):
        raise Unauthorized("the renewal proof is not signed by the certificate's key") from None
    now = ctx.clock()
    issued = ctx.authority.issue_agent(agent_id, csr, now, ctx.settings.agent_cert_lifetime_s)

    def op(db: sqlite_utils.Database) -> None:
        row = db.execute(
            "SELECT c.agent_id, c.spki_pin, c.revoked_at, c.not_after, a.revoked_at "
            "FROM agent_certs c JOIN agents a ON a.id = c.agent_id WHERE c.serial = ?",
            [names.serial],
        ).fetchone()
        if row is None or row[0] != agent_id or row[1] != names.pin:
            raise Unauthorized("the certificate was not issued by this hub")
        if row[2] is not None or row[4] is not None:
            raise Unauthorized(f"agent {agent_id} has been revoked: re-enroll with a new token")
        grace = _grace_s(ctx, db, agent_id)
        if now > row[3] + grace:
            days = (now - row[3]) / 86400
            raise Unauthorized(
                f"the certificate expired {days:.0f} days ago, past the site's "
                f"{grace / 86400:.0f}-day grace window: re-enroll with a new token"
            )
        _spend_nonce(db, nonce, now)
        record_cert(db, agent_id, issued, "proof", now)
        db.execute("UPDATE agents SET rekey_requested = 0 WHERE id = ?", [agent_id])
        detail = {"serial": issued.serial, "old_serial": names.serial, "how": "proof"}
        audit.record(db, f"agent:{agent_id}", "agent.renew", f"agent:{agent_id}", detail, ts=now)

    ctx.store.write(op)
    return issued_answer(ctx, agent_id, issued)


def revoke(ctx: HubContext, agent_id: str, actor: str) -> dict[str, Any]:
    """Revoke the agent and every certificate it holds; its next request is refused."""
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> int:
        cur = db.execute(
            "UPDATE agents SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [now, agent_id]
        )
        if cur.rowcount == 0:
            _exists(db, agent_id)
        certs = db.execute(
            "UPDATE agent_certs SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL",
            [now, agent_id],
        ).rowcount
        audit.record(db, actor, "agent.revoke", f"agent:{agent_id}", {"certs": certs}, ts=now)
        return certs

    return {"agent_id": agent_id, "revoked_certificates": ctx.store.write(op), "revoked_at": now}


def request_rekey(ctx: HubContext, agent_id: str, actor: str) -> dict[str, Any]:
    """Ask the agent to renew with a fresh key at its next check-in."""
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        cur = db.execute(
            "UPDATE agents SET rekey_requested = 1 WHERE id = ? AND revoked_at IS NULL", [agent_id]
        )
        if cur.rowcount == 0:
            _exists(db, agent_id)
            raise InvalidInput(f"agent {agent_id} is revoked; enroll the host again instead")
        audit.record(db, actor, "agent.rekey", f"agent:{agent_id}", ts=now)

    ctx.store.write(op)
    return {"agent_id": agent_id, "rekey_requested": True}


def _exists(db: sqlite_utils.Database, agent_id: str) -> None:
    if db.execute("SELECT 1 FROM agents WHERE id = ?", [agent_id]).fetchone() is None:
        raise NotFound(f"no agent with id {agent_id}")
