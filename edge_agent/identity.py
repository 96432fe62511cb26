"""The agent's identity on disk: its key and certificate, and the CAs it verifies the hub by.

The key is made here and never leaves the host. Key and certificate share one file
(`identity.pem`, 0600), so replacing them is one atomic rename. A renewed pair first goes to
`identity.next.pem` and replaces the current one only after the hub has accepted it once: a
crash between the hub's answer and that first use leaves the agent with a pair that works.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.contract.identity import bundle_digest, pin_of_spki, proof_message
from edge_agent.state import write_private_bytes

IDENTITY_FILE = "identity.pem"
NEXT_FILE = "identity.next.pem"
BUNDLE_FILE = "hub-ca.pem"
AUDIT_KEY_FILE = "hub-audit.pub"  # what the hub's audit checkpoints are signed with
RENEW_FRACTION = 2 / 3


class PinMismatch(Exception):
    """The hub's CAs do not include the one the enrollment token pins: not our hub."""


@dataclass(frozen=True)
class Identity:
    path: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def not_before(self) -> float:
        return self.cert.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def renew_due(self, now: float) -> bool:
        """At two thirds of the certificate's life, give or take a tenth of it (spread by the
        serial, so a fleet enrolled at once does not renew at once)."""
        life = self.not_after - self.not_before
        jitter = (self.cert.serial_number % 2001 - 1000) / 10000  # -0.1 .. +0.1
        return now >= self.not_before + life * (RENEW_FRACTION + jitter)

    def expired(self, now: float) -> bool:
        return now >= self.not_after

    def sign_proof(self, nonce: str, csr_pem: str) -> str:
        signature = self.key.sign(proof_message(nonce, csr_pem), ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """A CSR proving the key; its name is a placeholder, the hub chooses the real one."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiorch agent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def save(path: Path, key: ec.EllipticCurvePrivateKey, cert_pem: str) -> Identity:
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_bytes(path, key_bytes + cert_pem.encode())
    return Identity(path, key, x509.load_pem_x509_certificate(cert_pem.encode()))


def load(path: Path) -> Identity | None:
    """The pair in `path`, or None if there is none (or it is unreadable: a torn write cannot
    happen, but a hand-edited file can)."""
    try:
        data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        cert = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE") :])
    except (OSError, ValueError):
        return None
    return Identity(path, key, cert) if isinstance(key, ec.EllipticCurvePrivateKey) else None


def promote(on_trial: Identity) -> Identity:
    """The renewed pair worked: it becomes the current one."""
    current = on_trial.path.with_name(IDENTITY_FILE)
    os.replace(on_trial.path, current)
    return Identity(current, on_trial.key, on_trial.cert)


def save_bundle(state_dir: Path, bundle_pem: str) -> str:
    """Keep the hub's CAs; returns their digest (what the hub's answers are compared with)."""
    write_private_bytes(state_dir / BUNDLE_FILE, bundle_pem.encode())
    return bundle_digest(bundle_pem)


def held_bundle_digest(state_dir: Path) -> str:
    try:
        return bundle_digest((state_dir / BUNDLE_FILE).read_text())
    except (OSError, UnicodeError):
        return ""


def bundle_certs(bundle_pem: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(bundle_pem.encode())
    except ValueError:
        return []


def pinned(bundle_pem: str, pin: str) -> str:
    """The one CA of `bundle_pem` whose key has `pin`, as PEM; PinMismatch otherwise."""
    seen = []
    for cert in bundle_certs(bundle_pem):
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if pin_of_spki(spki) == pin:
            return cert.public_bytes(serialization.Encoding.PEM).decode()
        seen.append(pin_of_spki(spki))
    raise PinMismatch(
        f"the hub's CA ({', '.join(seen) or 'none'}) is not the one the token pins ({pin}): "
        "not sending the token"
    )


def tls_context(
    cafile: Path | None, cadata: str | None, identity: Identity | None
) -> ssl.SSLContext:
    """Verify the hub by its CAs (never the system store) and present `identity` if given."""
    context = ssl.create_default_context(
        cafile=str(cafile) if cafile else None, cadata=cadata if cadata else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        context.load_cert_chain(identity.path)
    return context


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
