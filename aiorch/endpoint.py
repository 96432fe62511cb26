"""Where a running hub records its URL in its data dir, so the CLI and the demo find it
without importing the server."""

from __future__ import annotations

import json
import os
from pathlib import Path

ENDPOINT_FILE = "hub.json"


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
