"""Keeping the agent trusted: enrollment against a pinned CA, renewal before expiry, renewal by
proof after a long time offline, the hub's CA bundle kept current, and a clock-skew warning.

Nothing here ever stops the workloads: a refusal is logged once and the agent keeps running
what its last desired state says until it is trusted again.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from edge_agent import identity, witness
from edge_agent.client import HubClient, HubRefused, HubUnavailable, TrustNews, check_hub_url
from edge_agent.contract.identity import CLOCK_SKEW_WARN_S, split_token
from edge_agent.identity import AUDIT_KEY_FILE, BUNDLE_FILE, IDENTITY_FILE, NEXT_FILE, Identity
from edge_agent.trouble import Trouble

log = logging.getLogger("aiorch.agent")


class NotEnrolled(Exception):
    pass


def enroll_with_pin(
    state_dir: Path, hub_url: str, token_text: str, facts: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Check the hub's CA against the token's pin before sending anything, then trade the
    token and a CSR for the agent's first certificate. The key is made here, never sent."""
    check_hub_url(hub_url)
    token, pin = split_token(token_text)
    anyone = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anyone.check_hostname = False
    anyone.verify_mode = ssl.CERT_NONE  # only to read the public CA bundle; the pin decides
    probe = HubClient(hub_url, anyone, timeout_s)
    try:
        ca_pem = identity.pinned(probe.ca_bundle(), pin)
    finally:
        probe.close()
    client = HubClient(hub_url, identity.tls_context(None, ca_pem, None), timeout_s)
    key = identity.new_key()
    try:
        answer = client.enroll(token, identity.csr_pem(key), facts)
    finally:
        client.close()
    identity.save(state_dir / IDENTITY_FILE, key, answer["certificate"])
    (state_dir / NEXT_FILE).unlink(missing_ok=True)
    _keep_issued(state_dir, answer)
    return answer


def _keep_issued(state_dir: Path, answer: dict[str, Any]) -> str:
    """The CAs and the audit key that came with a certificate; returns the CAs' digest."""
    audit_key = answer.get("audit_public_key")
    if isinstance(audit_key, str):
        (state_dir / AUDIT_KEY_FILE).write_text(audit_key)
    return identity.save_bundle(state_dir, answer["ca_bundle"])


class Trust:
    """The agent's certificate and its hub's CAs, and the client built over them."""

    def __init__(self, state_dir: Path, hub_url: str, agent_id: str, timeout_s: float) -> None:
        self.dir = state_dir
        self.hub_url = hub_url
        self.agent_id = agent_id
        self.timeout_s = timeout_s
        self.current = identity.load(state_dir / IDENTITY_FILE)
        self.next = identity.load(state_dir / NEXT_FILE)
        if self.current is None and self.next is None:
            raise NotEnrolled(
                f"not enrolled: no certificate in {state_dir}; run 'aiorch-agent enroll' first"
            )
        self.skew_s = 0.0  # hub clock minus ours, from the last answer
        self.bundle = identity.held_bundle_digest(state_dir)  # read once, then kept in step
        self.checkpoint_seen = ""  # the last checkpoint text taken, not checked again
        self.clock = Trouble(log)
        self.audit = Trouble(log)  # the hub's audit log contradicting what this agent saw
        self.hub = self._client()

    @property
    def using(self) -> Identity:
        """The pair presented now: a renewed one on trial, else the current one."""
        chosen = self.next or self.current
        assert chosen is not None
        return chosen

    def _client(self) -> HubClient:
        bundle = self.dir / BUNDLE_FILE
        tls = identity.tls_context(bundle, None, self.using)
        anonymous = identity.tls_context(bundle, None, None)
        return HubClient(self.hub_url, tls, self.timeout_s, anonymous)

    def _rebuild(self) -> None:
        self.hub.close()
        self.hub = self._client()

    def now(self) -> float:
        """Our best idea of the hub's time (decisions about expiry use it)."""
        return time.time() + self.skew_s

    def accepted(self, news: TrustNews) -> None:
        """The hub accepted a request: a pair on trial becomes current, the clock is checked,
        a changed CA bundle is fetched, and a renewal is made when due or asked for."""
        if self.next is not None:
            self.current, self.next = identity.promote(self.next), None
            log.info(
                "renewed certificate in use, valid until %s", identity.utc(self.using.not_after)
            )
        if news.hub_time is not None:
            self._check_clock(news.hub_time)
        if news.checkpoint:
            self._witness(news.checkpoint)
        if news.bundle and news.bundle != self.bundle:
            self.bundle = identity.save_bundle(self.dir, self.hub.ca_bundle(self.agent_id))
            log.info("the hub's CA bundle changed: fetched the new one")
            self._rebuild()
        if news.renew or self.using.renew_due(self.now()):
            self.renew()

    def _check_clock(self, hub_time: float) -> None:
        self.skew_s = hub_time - time.time()
        if abs(self.skew_s) > CLOCK_SKEW_WARN_S:
            self.clock.failing(
                "skew",
                "this host's clock is %.0f s %s the hub's: fix its time (chrony); certificates "
                "are judged by the hub's clock",
                abs(self.skew_s),
                "behind" if self.skew_s > 0 else "ahead of",
            )
        else:
            self.clock.over("clock agrees with the hub again")

    def _witness(self, text: str) -> None:
        """Keep the hub's newest audit checkpoint; say so, once, if it contradicts ours. The
        same checkpoint comes with every answer until the next is signed: checked once."""
        if text == self.checkpoint_seen:
            return
        try:
            checkpoint = json.loads(text)
        except ValueError:
            checkpoint = None
        try:
            pem = (self.dir / AUDIT_KEY_FILE).read_bytes()
        except OSError:
            pem = None
        problem = (
            witness.observe(self.dir, checkpoint, pem)
            if isinstance(checkpoint, dict)
            else "the hub sent an audit checkpoint that is not JSON"
        )
        self.checkpoint_seen = text
        if problem:
            self.audit.failing("audit", "audit log of the hub: %s", problem)
        else:
            self.audit.over("the hub's audit checkpoints agree with this agent's again")

    def renew(self) -> None:
        """A fresh key and certificate over mTLS, kept on trial until the hub accepts it."""
        key = identity.new_key()
        answer = self.hub.renew(self.agent_id, identity.csr_pem(key))
        self._take(key, answer)

    def renew_by_proof(self) -> None:
        """Renew a certificate TLS no longer accepts (expired offline, or from a retired CA)
        by signing a nonce and the new CSR with the old key, over server-only TLS."""
        old = self.current or self.using
        tls = identity.tls_context(self.dir / BUNDLE_FILE, None, None)
        client = HubClient(self.hub_url, tls, self.timeout_s)
        try:
            nonce = client.renew_nonce()
            key = identity.new_key()
            csr = identity.csr_pem(key)
            proof = {"certificate": old.cert_pem, "csr": csr, "nonce": nonce}
            answer = client.renew_by_proof({**proof, "signature": old.sign_proof(nonce, csr)})
        finally:
            client.close()
        self._take(key, answer)
        log.warning("certificate renewed by proof of its key (it was %s)", self._why_proof(old))

    def _why_proof(self, old: Identity) -> str:
        if old.expired(self.now()):
            return f"expired since {identity.utc(old.not_after)}"
        return "refused by the hub's TLS"

    def _take(self, key: Any, answer: dict[str, Any]) -> None:
        self.next = identity.save(self.dir / NEXT_FILE, key, answer["certificate"])
        self.bundle = _keep_issued(self.dir, answer)
        self._rebuild()

    def refused(self, refusal: HubRefused) -> bool:
        """After a refused request: fall back from a pair on trial, or renew by proof when the
        certificate is the problem. True if there is something new to try; a refused proof is
        raised instead, since its reason (revoked, past the grace window) is what the operator
        must read."""
        if refusal.status != 401:
            return False
        if self.next is not None and self.current is not None:
            log.warning("the renewed certificate was refused; back to the previous one")
            (self.dir / NEXT_FILE).unlink(missing_ok=True)
            self.next = None
            self._rebuild()
            return True
        try:
            self.renew_by_proof()
        except HubUnavailable:
            return False
        return True

    def close(self) -> None:
        self.hub.close()
