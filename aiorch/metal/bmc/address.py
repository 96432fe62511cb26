"""Parsing the BMC address an operator types (redfish+http://..., ipmi://...): one shape the
drivers read, and a display form that never carries credentials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from aiorch.errors import InvalidInput

_FORMS = (
    "redfish+http://HOST:PORT/redfish/v1/Systems/ID, redfish+https://..., redfish://..., "
    "ipmi://HOST[:PORT] or agent://HOST (no BMC: the host's own agent)"
)
_SYSTEMS = "/redfish/v1/Systems/"


@dataclass(frozen=True)
class BmcAddress:
    scheme: Literal["redfish", "ipmi", "agent"]
    url: str  # redfish: the http(s) base; otherwise ''
    system_path: str  # redfish: /redfish/v1/Systems/ID; otherwise ''
    host: str  # agent: the inventory host whose agent reboots the machine
    port: int

    def display(self) -> str:
        """The address as the operator typed it (credentials are never part of it)."""
        if self.scheme == "ipmi":
            return f"ipmi://{self.host}:{self.port}"
        if self.scheme == "agent":
            return f"agent://{self.host}"
        proto = "https" if self.url.startswith("https:") else "http"
        return f"redfish+{proto}://{self.url.split('://', 1)[1]}{self.system_path}"


def parse_bmc(text: str) -> BmcAddress:
    """Read a BMC address; anything else is one InvalidInput line naming the problem."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"BMC address {text!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "BMC address must not carry credentials (user:pass@): give them separately"
        )
    if not parts.hostname:
        raise InvalidInput(f"BMC address {text!r} has no host; expected {_FORMS}")
    host = parts.hostname
    if scheme == "ipmi":
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidInput(f"IPMI address {text!r} must be ipmi://HOST[:PORT] with no path")
        return BmcAddress("ipmi", "", "", host, port or 623)
    if scheme == "agent":
        if port is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidInput(f"agent address {text!r} must be agent://HOST: a host's name only")
        return BmcAddress("agent", "", "", parts.netloc, 0)  # as typed: host names keep case
    protos = {"redfish": "https", "redfish+https": "https", "redfish+http": "http"}
    if scheme not in protos:
        raise InvalidInput(
            f"BMC address {text!r} has an unknown scheme {scheme!r}; expected {_FORMS}"
        )
    proto = protos[scheme]
    path = parts.path.rstrip("/")
    system_id = path[len(_SYSTEMS) :] if path.startswith(_SYSTEMS) else ""
    if not system_id or "/" in system_id or parts.query or parts.fragment:
        raise InvalidInput(
            f"Redfish address {text!r} must name a system: .../redfish/v1/Systems/ID"
        )
    port = port or (443 if proto == "https" else 80)
    netloc = f"[{host}]" if ":" in host else host
    return BmcAddress("redfish", f"{proto}://{netloc}:{port}", path, host, port)
