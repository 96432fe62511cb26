"""A thin wrapper over the podman CLI: argv lists (never a shell), the agent's global podman
arguments on every call, and podman's own last stderr line as the error."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# What marks a container as the agent's: only containers with all of these are ever touched.
MANAGED = "io.aiorch.managed"
OWNER = "io.aiorch.owner"  # the agent's state dir: two agents on one machine stay apart
WORKLOAD = "io.aiorch.workload"
TEMPLATE = "io.aiorch.template"
JOB = "io.aiorch.job"  # a job's container (the attempt id); it never has a WORKLOAD label


class PodmanError(Exception):
    """A podman command failed; the message is one line."""


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str  # podman's State: "running", "exited", "created", "paused", ...
    exit_code: int
    labels: dict[str, str]
    started_at: float | None = None  # epoch seconds, as podman tells them
    exited_at: float | None = None

    @property
    def workload(self) -> str:
        return self.labels.get(WORKLOAD, "")

    @property
    def template(self) -> str:
        return self.labels.get(TEMPLATE, "")


class Podman:
    def __init__(self, global_args: Sequence[str] = (), binary: str = "podman") -> None:
        self.global_args = list(global_args)
        self.binary = binary

    def available(self) -> bool:
        """Checked on every use: the provisioning role may install podman after the agent."""
        return shutil.which(self.binary) is not None

    def __call__(self, *args: str, timeout: float = 120) -> str:
        """Run `podman GLOBAL_ARGS ARGS` and return its stdout."""
        argv = [self.binary, *self.global_args, *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PodmanError(f"podman {args[0]} took longer than {timeout:g}s") from None
        except OSError as exc:
            raise PodmanError(f"cannot run podman: {exc}") from None
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise PodmanError(f"podman {args[0]} failed: {lines[-1].strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        out = self(*args).strip()
        return json.loads(out) if out else []

    def containers(self, owner: str, kind: str = WORKLOAD) -> list[Container]:
        """Every container, running or not, that this agent (`owner`) made for a workload
        (or, with `kind=JOB`, for a job)."""
        rows = self.json("ps", "--all", "--filter", f"label={MANAGED}=true", "--format", "json")
        found = []
        for row in rows or []:
            labels = row.get("Labels") or {}
            if labels.get(OWNER) != owner or not labels.get(kind):
                continue
            found.append(
                Container(
                    id=row["Id"],
                    name=(row.get("Names") or [row["Id"][:12]])[0],
                    state=str(row.get("State", "unknown")),
                    exit_code=int(row.get("ExitCode") or 0),
                    labels=labels,
                    started_at=_epoch(row.get("StartedAt")),
                    exited_at=_epoch(row.get("ExitedAt")),
                )
            )
        return found

    def log_tail(self, container_id: str, keep: int) -> tuple[bytes, int]:
        """The last `keep` bytes of the container's output (stdout and stderr as they came)
        and the whole output's length, read as a stream: a chatty job's log never sits whole
        in memory."""
        argv = [self.binary, *self.global_args, "logs", container_id]
        tail, total = bytearray(), 0
        try:
            with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
                assert proc.stdout is not None
                while chunk := proc.stdout.read(65536):
                    total += len(chunk)
                    tail += chunk
                    del tail[:-keep]
                if proc.wait(timeout=30) != 0:
                    raise PodmanError(f"podman logs failed: {tail[-200:].decode(errors='replace')}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PodmanError(f"cannot read the log of {container_id[:12]}: {exc}") from None
        return bytes(tail), total

    def last_log_line(self, container_id: str) -> str:
        """The container's last non-empty output line, stdout or stderr (where tracebacks go),
        or "" when there is none or podman can't tell."""
        argv = [self.binary, *self.global_args, "logs", "--tail", "5", container_id]
        try:
            done = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10
            )
        except (subprocess.TimeoutExpired, OSError):
            return ""
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        return lines[-1] if lines and done.returncode == 0 else ""

    def image_ids(self) -> set[str]:
        """Ids of every image in local storage."""
        return {row["Id"] for row in self.json("images", "--format", "json") or []}


def _epoch(value: Any) -> float | None:
    """podman's StartedAt/ExitedAt: epoch seconds, 0 (or less) before it happened."""
    return float(value) if isinstance(value, int | float) and value > 0 else None
