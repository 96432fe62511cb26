"""Where a running hub records its URL and its CA in its data dir, so the CLI and the demo
find and verify it without importing the server."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path

from aiorch.errors import UserError

ENDPOINT_FILE = "hub.json"
CA_FILE = "ca.pem"


def hub_tls(ca: Path | None) -> ssl.SSLContext:
    """Verify the hub against `ca` (the hub CA's bundle), else the system's trust store (an
    operator's own certificate from a public CA)."""
    if ca is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"cannot use the CA bundle {ca}: {exc}") from None


def write_endpoint(data_dir: Path, url: str) -> None:
    """Record `url` (and this process's pid) for the local CLI."""
    text = json.dumps({"url": url, "pid": os.getpid()}) + "\n"
    (data_dir / ENDPOINT_FILE).write_text(text)


def endpoint_url(data_dir: Path) -> str | None:
    """The URL the hub serving `data_dir` recorded, or None if none is recorded."""
    try:
        return str(json.loads((data_dir / ENDPOINT_FILE).read_text())["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
