"""The hub's certificate authorities and what they sign.

One CA is `active`: tokens pin it and, outside a rotation, it signs every certificate. During a
rotation a `next` CA is trusted beside it and takes over signing (see pki/rotation.py); a
`retired` CA is trusted no more, but its certificate is kept so that an agent holding one of
its certificates can still prove who it is and renew (pki/renewal in services/agent_identity).

Keys live in their own files (`ca.key`, `ca.next.key`, 0600), never in the database and never
the sealing key; the certificates, their pins and states are rows of `hub_cas`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import sqlite_utils
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiorch.endpoint import CA_FILE
from aiorch.errors import InvalidInput, UserError
from aiorch.hub.pki.keyfiles import KeyType, key_pem, load_key, write_private
from edge_agent.contract.identity import agent_uri, bundle_digest, pin_of_spki

CA_KEY_FILE = "ca.key"
NEXT_KEY_FILE = "ca.next.key"
CA_LIFETIME_S = 10 * 365 * 86400  # kubeadm's choice; rotation replaces a CA long before
BACKDATE_S = 300  # notBefore this far back: an edge box whose clock lags a little still works


def spki_pin(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pin_of_spki(spki)


def _when(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@dataclass(frozen=True)
class HubCA:
    id: str
    cert: x509.Certificate
    state: str  # active, next or retired

    @cached_property
    def pin(self) -> str:
        return spki_pin(self.cert)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class Issued:
    """A certificate the hub signed for an agent, as the agent_certs row records it."""

    pem: str
    serial: str
    ca_id: str
    spki_pin: str
    not_before: float
    not_after: float


def new_ca(now: float, label: str) -> tuple[KeyType, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"aiorch hub CA {label}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_when(now - BACKDATE_S))
        .not_valid_after(_when(now + CA_LIFETIME_S))
        # One CA below it at most: the next CA's cross-certificate during a rotation.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs, by convention); a leaf signs handshakes."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def parse_csr(pem: str) -> x509.CertificateSigningRequest:
    """A CSR whose signature proves its key and whose key is one we issue for (EC P-256).
    Nothing else in it is read: names, SANs and extensions are the hub's to choose."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        raise InvalidInput("csr is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise InvalidInput("csr signature does not verify with its own key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInput("csr key must be an EC P-256 key")
    return csr


class Authority:
    """The CAs in force, and the key of the one that signs now."""

    def __init__(
        self,
        data_dir: Path,
        cas: list[HubCA],
        phase: str,
        cross_pem: str | None,
        operator_ca: x509.Certificate | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.cas = cas
        self.phase = phase
        self.cross_pem = cross_pem  # the next CA's key certified by the old one, if any
        self.operator_ca = operator_ca  # the issuer of an operator-supplied server cert

    @property
    def active(self) -> HubCA:
        return next(ca for ca in self.cas if ca.state == "active")

    @property
    def next(self) -> HubCA | None:
        return next((ca for ca in self.cas if ca.state == "next"), None)

    @property
    def signing(self) -> HubCA:
        """The CA that signs certificates now: the next one once clients are moving to it."""
        nxt = self.next
        return nxt if nxt is not None and self.phase != "init" else self.active

    @property
    def serving(self) -> HubCA:
        """The CA the hub's own server certificate comes from."""
        nxt = self.next
        return nxt if nxt is not None and self.phase == "update_servers" else self.active

    def trusted(self) -> list[HubCA]:
        return [ca for ca in self.cas if ca.state != "retired"]

    def bundle_pem(self) -> str:
        """What verifies the hub: its trusted CAs, and the operator's CA if it serves its own
        certificate. Agents keep this; DATA_DIR/ca.pem holds it for the CLI."""
        operator = (
            self.operator_ca.public_bytes(serialization.Encoding.PEM).decode()
            if self.operator_ca
            else ""
        )
        return operator + "".join(ca.pem for ca in self.trusted())

    @cached_property
    def bundle_digest(self) -> str:
        return bundle_digest(self.bundle_pem())

    @property
    def token_pin(self) -> str:
        """The pin enrollment tokens carry: of the CA the hub's TLS chain ends in."""
        return spki_pin(self.operator_ca) if self.operator_ca else self.active.pin

    def find(self, ca_id: str) -> HubCA | None:
        return next((ca for ca in self.cas if ca.id == ca_id), None)

    def issuer_of(self, cert: x509.Certificate) -> HubCA | None:
        """The CA of ours (any state) that signed `cert`, or None."""
        for ca in self.cas:
            try:
                cert.verify_directly_issued_by(ca.cert)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        return None

    def _key(self, ca: HubCA) -> KeyType:
        """The key of `ca`, from whichever key file holds it (a rotation renames the next
        CA's key to ca.key once it is active; until then it is still ca.next.key)."""
        wanted = spki_pin(ca.cert)
        for name in (CA_KEY_FILE, NEXT_KEY_FILE):
            path = self.data_dir / name
            if path.exists():
                key = load_key(path)
                spki = key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                if pin_of_spki(spki) == wanted:
                    return key
        raise UserError(f"no key file in {self.data_dir} holds the key of CA {ca.id}")

    def _leaf(
        self,
        ca: HubCA,
        subject: str,
        public_key: ec.EllipticCurvePublicKey,
        now: float,
        life: float,
    ) -> x509.CertificateBuilder:
        ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(ca.cert.subject)
            .public_key(public_key)
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(_when(now - BACKDATE_S))
            .not_valid_after(_when(min(now + life, ca.cert.not_valid_after_utc.timestamp())))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(signs_certificates=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
        )

    def issue_agent(
        self, agent_id: str, csr: x509.CertificateSigningRequest, now: float, lifetime_s: float
    ) -> Issued:
        """A client certificate naming `agent_id` (and nothing the CSR asked for)."""
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # parse_csr checked it
        ca = self.signing
        cert = (
            self._leaf(ca, f"aiorch agent {agent_id}", key, now, lifetime_s)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(agent_uri(agent_id))]),
                False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(self._key(ca), hashes.SHA256())
        )
        return Issued(
            pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            serial=format(cert.serial_number, "x"),
            ca_id=ca.id,
            spki_pin=spki_pin(cert),
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=cert.not_valid_after_utc.timestamp(),
        )

    def issue_server(
        self, names: list[x509.GeneralName], now: float, lifetime_s: float
    ) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) for the hub's listener, covering `names`. The chain carries
        the cross-certificate while one exists, so an agent that trusts only the old CA still
        verifies a server certificate from the new one."""
        key = ec.generate_private_key(ec.SECP256R1())
        ca = self.serving
        cert = (
            self._leaf(ca, "aiorch hub", key.public_key(), now, lifetime_s)
            .add_extension(x509.SubjectAlternativeName(names), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(self._key(ca), hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM)
        if self.cross_pem and self.phase in ("update_servers", "standby"):
            chain += self.cross_pem.encode()
        return chain, key_pem(key)

    def cross_sign(self, nxt: HubCA, now: float) -> str:
        """The next CA's subject and key, certified by the active CA."""
        active = self.active
        ca_ski = active.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(nxt.cert.subject)
            .issuer_name(active.cert.subject)
            .public_key(nxt.cert.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(now - BACKDATE_S))
            .not_valid_after(active.cert.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(signs_certificates=True), critical=True)
            .add_extension(
                nxt.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value, False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
            .sign(self._key(active), hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


def ca_row(ca_id: str, cert: x509.Certificate, state: str, now: float) -> dict[str, object]:
    return {
        "id": ca_id,
        "cert_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "pin": spki_pin(cert),
        "state": state,
        "created_at": now,
        "not_after": cert.not_valid_after_utc.timestamp(),
    }


def load_authority(
    data_dir: Path, db: sqlite_utils.Database, operator_ca: x509.Certificate | None = None
) -> Authority | None:
    rows = list(db.query("SELECT id, cert_pem, state FROM hub_cas ORDER BY created_at"))
    if not rows:
        return None
    cas = [
        HubCA(r["id"], x509.load_pem_x509_certificate(r["cert_pem"].encode()), r["state"])
        for r in rows
    ]
    trust = db.execute("SELECT phase, cross_cert_pem FROM hub_trust WHERE id = 1").fetchone()
    phase, cross = trust if trust else ("standby", None)
    return Authority(data_dir, cas, phase, cross, operator_ca)


def write_bundle(authority: Authority) -> None:
    """DATA_DIR/ca.pem: the CAs trusted now, for the CLI and for scripts."""
    write_private(authority.data_dir / CA_FILE, authority.bundle_pem().encode(), exclusive=False)


def create_first_ca(data_dir: Path, db: sqlite_utils.Database, now: float) -> None:
    """The hub's first CA: key file first (exclusively), then its row. Called under the init
    lock, so two hubs starting on one empty data dir make one CA."""
    key, cert = new_ca(now, "1")
    write_private(data_dir / CA_KEY_FILE, key_pem(key))
    ca_id = secrets.token_hex(8)
    db.table("hub_cas").insert(ca_row(ca_id, cert, "active", now))
    db.execute(
        "INSERT INTO hub_trust (id, phase, cross_cert_pem, updated_at) VALUES (1, 'standby', "
        "NULL, ?) ON CONFLICT (id) DO NOTHING",
        [now],
    )
