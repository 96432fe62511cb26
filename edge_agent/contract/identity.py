"""How an agent proves who it is: the enrollment token with the hub's CA pin, the identity its
certificate names, the renewal proof, and the headers that carry trust news on every answer.

The hub and the agent both build and read these, so they live here once. Standard library
only: the crypto that produces the bytes (SPKI, signatures) stays on each side.
"""

from __future__ import annotations

import hashlib
import re

from edge_agent.contract.fields import ContractError

AGENT_URI_PREFIX = "urn:aiorch:agent:"
PIN_SCHEME = "sha256:"
# `aie_<id>_<secret>` is the hub's token; `:sha256:<hex>` pins the CA the hub's TLS chains to.
TOKEN_PIN_SEPARATOR = ":" + PIN_SCHEME
_PIN = re.compile(r"sha256:[0-9a-f]{64}")
_AGENT_ID = re.compile(r"[0-9a-f]{16}")

# Every answer to an agent carries the hub's clock; trust changes come as headers too, since
# a 304 check-in has no body.
TIME_HEADER = "X-Aiorch-Time"
RENEW_HEADER = "X-Aiorch-Renew"  # "1": renew the certificate now (rekey, CA rotation)
BUNDLE_HEADER = "X-Aiorch-CA-Bundle"  # digest of the CAs the hub trusts now
CHECKPOINT_HEADER = "X-Aiorch-Audit-Checkpoint"  # the newest signed audit checkpoint (JSON)
CLOCK_SKEW_WARN_S = 60.0

PROOF_CONTEXT = b"aiorch-renew-by-proof-v1\n"


def pin_of_spki(spki_der: bytes) -> str:
    """The pin of a public key: SHA-256 of its DER SubjectPublicKeyInfo (what Teleport and
    kubeadm pin), which survives a CA certificate re-issued for the same key."""
    return PIN_SCHEME + hashlib.sha256(spki_der).hexdigest()


def bundle_digest(bundle_pem: str) -> str:
    """What BUNDLE_HEADER carries: the agent compares it with the bundle it holds."""
    return hashlib.sha256(bundle_pem.encode()).hexdigest()[:32]


def join_token(token: str, pin: str) -> str:
    """One string for the operator to hand over: the token and the pin of the hub's CA."""
    return token + TOKEN_PIN_SEPARATOR + pin.removeprefix(PIN_SCHEME)


def split_token(text: str) -> tuple[str, str]:
    """(token, pin) from what `aiorch enroll-token create` printed; a token without a pin is
    refused, since the agent could then not tell its hub from an impostor."""
    token, sep, pin_hex = text.strip().rpartition(TOKEN_PIN_SEPARATOR)
    pin = PIN_SCHEME + pin_hex
    if not sep or not token:
        raise ContractError(
            "token", "has no CA pin (':sha256:...'): use the whole string that "
            "'aiorch enroll-token create' printed"
        )  # fmt: skip
    if not _PIN.fullmatch(pin):
        raise ContractError("token", "has a malformed CA pin (want sha256: and 64 hex digits)")
    return token, pin


def agent_uri(agent_id: str) -> str:
    return AGENT_URI_PREFIX + agent_id


def agent_id_of_uri(uri: str) -> str | None:
    """The agent id an identity URI names, or None when it is not one of ours."""
    ident = uri.removeprefix(AGENT_URI_PREFIX)
    return ident if uri.startswith(AGENT_URI_PREFIX) and _AGENT_ID.fullmatch(ident) else None


def proof_message(nonce: str, csr_pem: str) -> bytes:
    """What an agent signs with its old key to renew a certificate the TLS layer no longer
    accepts (expired offline, or issued by a retired CA): bound to the hub's one-use nonce and
    to the new key's CSR, so a captured proof renews nothing else."""
    return PROOF_CONTEXT + nonce.encode() + b"\n" + hashlib.sha256(csr_pem.encode()).digest()
