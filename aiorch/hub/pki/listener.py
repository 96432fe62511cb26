"""The TLS side of the hub's sockets: its server certificate and the SSL context uvicorn uses.

HTTPS only: there is no plain-HTTP listener and no switch for one. One context serves people
and agents: TLS 1.2 at least, and a client certificate is asked for but optional, since the
CLI authenticates with a bearer token. A certificate that is presented is verified by the TLS
layer (signed by a hub CA, within its validity), and the app then checks, per request, that it
is one the hub issued and has not revoked (services/agent_identity.py).

The server certificate covers every address the hub listens on, is renewed at two thirds of
its life (in place: new handshakes use it, open connections keep theirs), or is the operator's
own (`--tls-cert/--tls-key`, with `--tls-ca` naming its issuer for clients).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509

from aiorch.errors import UserError
from aiorch.hub.pki.authority import Authority
from aiorch.hub.pki.keyfiles import check_private, write_private

log = logging.getLogger("aiorch.hub.tls")

TLS_DIR = "tls"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
SERVER_LIFETIME_S = 365 * 86400
RENEW_FRACTION = 2 / 3


@dataclass(frozen=True)
class OperatorCert:
    cert: Path
    key: Path


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def listen_names(hosts: list[str], extra: list[str]) -> list[x509.GeneralName]:
    """SANs for the listen addresses (every local address for a wildcard), `extra` names
    (an address among them is an IP SAN, which is what a client dialling it checks), and
    localhost, in a stable order."""
    addresses: set[str] = {"127.0.0.1"}
    names: set[str] = {"localhost"}
    for host in [*extra, *hosts]:
        if _wildcard(host):
            for nics in psutil.net_if_addrs().values():
                addresses.update(
                    a.address.split("%")[0]
                    for a in nics
                    if a.family in (socket.AF_INET, socket.AF_INET6)
                )
            continue
        try:
            addresses.add(str(ipaddress.ip_address(host)))
        except ValueError:
            names.add(host)
    ips = sorted(addresses, key=lambda a: (":" in a, a))
    out: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names)]
    return out + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]


class Listener:
    """Owns tls/server.pem and tls/server.key, and the one SSL context built over them."""

    def __init__(
        self,
        data_dir: Path,
        names: list[x509.GeneralName],
        operator: OperatorCert | None = None,
        lifetime_s: float = SERVER_LIFETIME_S,
    ) -> None:
        self.dir = data_dir / TLS_DIR
        self.names = names
        self.operator = operator
        self.lifetime_s = lifetime_s
        self._context: ssl.SSLContext | None = None
        self._trusted: set[str] = set()

    @property
    def cert_path(self) -> Path:
        return self.operator.cert if self.operator else self.dir / SERVER_CERT

    @property
    def key_path(self) -> Path:
        return self.operator.key if self.operator else self.dir / SERVER_KEY

    def _due(self, authority: Authority, now: float) -> str | None:
        """Why the hub's own certificate must be (re)issued, or None."""
        if not self.cert_path.exists():
            return "none yet"
        cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        start = cert.not_valid_before_utc.timestamp()
        end = cert.not_valid_after_utc.timestamp()
        if now >= start + (end - start) * RENEW_FRACTION:
            return "two thirds of its life are over"
        if authority.issuer_of(cert) is not authority.serving:
            return "the serving CA changed"
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return "it names no address"
        if set(sans) != set(self.names):
            return "the listen addresses changed"
        return None

    def ensure(self, authority: Authority, now: float) -> bool:
        """Issue the server certificate if it is missing, aging or wrong; True if it was."""
        if self.operator is not None:
            check_private(self.operator.key)
            return False
        reason = self._due(authority, now)
        if reason is None:
            check_private(self.key_path)
            return False
        chain, key = authority.issue_server(self.names, now, self.lifetime_s)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        write_private(self.key_path, key, exclusive=False)
        write_private(self.cert_path, chain, exclusive=False)
        log.info("issued the hub's server certificate (%s)", reason)
        return True

    def context(self, authority: Authority) -> ssl.SSLContext:
        """The SSL context for every listening socket (built on first call)."""
        if self._context is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = ssl.CERT_OPTIONAL
            self._context = ctx
            self.reload(authority)
        return self._context

    def reload(self, authority: Authority) -> None:
        """Use the current server certificate and trust every CA the hub has had, for new
        handshakes. A retired CA stays trusted by TLS because a context cannot forget one;
        the per-request check refuses its certificates for anything but a renewal."""
        assert self._context is not None
        try:
            self._context.load_cert_chain(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(
                f"cannot load the hub's TLS certificate {self.cert_path}: {exc}"
            ) from None
        for ca in authority.cas:
            if ca.id not in self._trusted:
                self._context.load_verify_locations(cadata=ca.pem)
                self._trusted.add(ca.id)
