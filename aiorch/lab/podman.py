"""Thin wrapper over the podman CLI with the lab's runtime settings and readable errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from aiorch.errors import UserError

# crun refuses cgroups in hybrid v1/v2 mode on these machines; runc works (LAB-FACTS.md).
RUNTIME = "/usr/sbin/runc"
TOOLS = ("podman", "runc", "nft", "ssh-keygen")
INSTALL_HINT = "run `make system-deps` (apt-get install podman runc crun debootstrap nftables)"


def preflight(*extra_tools: str) -> None:
    """Fail early, in one line, when the lab cannot work on this machine."""
    if os.geteuid() != 0:
        raise UserError("aiorch lab needs root (privileged podman, nft rules): run it as root")
    missing = [tool for tool in (*TOOLS, *extra_tools) if shutil.which(tool) is None]
    if missing:
        raise UserError(f"aiorch lab needs {', '.join(missing)}: {INSTALL_HINT}")


def podman(
    *args: str,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``podman --runtime runc ARGS`` and return its output as text.

    ``input`` is bytes because ``podman cp -`` reads a tar stream. A failure
    becomes a ``UserError`` carrying podman's last stderr line, which is where
    podman says what went wrong.
    """
    argv = ["podman", "--runtime", RUNTIME, *args]
    try:
        raw = subprocess.run(argv, capture_output=True, input=input, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"podman {args[0]} took longer than {timeout:g}s") from None
    proc = subprocess.CompletedProcess(
        argv,
        raw.returncode,
        raw.stdout.decode(errors="replace"),
        raw.stderr.decode(errors="replace"),
    )
    if check and proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise UserError(f"podman {args[0]} failed: {lines[-1]}")
    return proc


def podman_json(*args: str) -> Any:
    """Run a podman query that prints JSON and parse it (``null`` becomes ``[]``)."""
    out = podman(*args).stdout.strip()
    return json.loads(out) if out else []
