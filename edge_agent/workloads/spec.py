"""The hub's workload entries, checked once into typed values.

Whatever reaches `podman run` comes from here, so anything that could change the meaning of an
argument (a ':' in a volume path, a newline in an env value, a name podman refuses) is refused
with a reason instead, and the hub sees that reason in the agent's report.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("aiorch.agent.workloads")

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
PROTOCOLS = ("tcp", "udp")


class InvalidWorkload(ValueError):
    """A workload entry the agent cannot run as written; the message says which field."""


@dataclass(frozen=True)
class Rejected:
    """An entry with an id that can't run: reported as failed, its container left alone."""

    reason: str
    template_hash: str


@dataclass(frozen=True)
class Image:
    ref: str
    digest: str  # sha256 of the docker-archive file, as the hub serves it
    size: int

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")


@dataclass(frozen=True)
class Port:
    container_port: int
    host_port: int
    protocol: str  # "tcp" or "udp"


@dataclass(frozen=True)
class Volume:
    host_path: str
    mount_path: str
    read_only: bool


@dataclass(frozen=True)
class HealthCheck:
    path: str
    port: int  # a container port; probed through the host port it is published on
    initial_delay_s: float
    period_s: float
    timeout_s: float
    failure_threshold: int


@dataclass(frozen=True)
class Workload:
    id: str
    project: str
    deployment: str
    replica: int
    template_hash: str
    image: Image
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str]
    secret_env: dict[str, str]
    ports: tuple[Port, ...]
    volumes: tuple[Volume, ...]
    gpus: tuple[int, ...]
    cpu: float | None
    memory_mib: int | None
    health_check: HealthCheck | None

    @property
    def container_name(self) -> str:
        return f"aiorch-{self.project}-{self.deployment}-{self.replica}"

    def health_port(self) -> int | None:
        """The host port the health check reaches (parsing makes sure there is one)."""
        if self.health_check is None:
            return None
        for port in self.ports:
            if port.container_port == self.health_check.port and port.protocol == "tcp":
                return port.host_port
        return None


def parse_workloads(document: dict[str, Any]) -> tuple[list[Workload], dict[str, Rejected]]:
    """The document's workloads, and the entries that can't run by id. An entry without a
    usable id can't be reported under one: it is logged and skipped."""
    entries = document.get("workloads") or []
    if not isinstance(entries, list):
        log.error("desired state: 'workloads' is not a list; running no workloads")
        return [], {}
    valid: dict[str, Workload] = {}
    invalid: dict[str, Rejected] = {}
    names: set[str] = set()
    for position, entry in enumerate(entries):
        wid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(wid, str) or not wid:
            log.error("desired state: workload #%d has no id; skipped", position)
            continue
        template = str(entry.get("template_hash") or "")
        try:
            if wid in valid or wid in invalid:
                raise InvalidWorkload("the id appears more than once")
            workload = parse_workload(entry)
            if workload.container_name in names:
                raise InvalidWorkload(f"container name {workload.container_name} is taken")
        except InvalidWorkload as exc:
            valid.pop(wid, None)
            invalid[wid] = Rejected(f"invalid workload: {exc}", template)
            continue
        names.add(workload.container_name)
        valid[wid] = workload
    return list(valid.values()), invalid


def parse_workload(raw: dict[str, Any]) -> Workload:
    workload = Workload(
        id=_str(raw, "id"),
        project=_name(raw, "project"),
        deployment=_name(raw, "deployment"),
        replica=_int(raw, "replica", minimum=0),
        template_hash=_name(raw, "template_hash"),
        image=_image(_dict(raw, "image")),
        command=tuple(_str_items(raw, "command")),
        args=tuple(_str_items(raw, "args")),
        env=_env(raw, "env"),
        secret_env=_env(raw, "secret_env"),
        ports=tuple(_port(p) for p in _list(raw, "ports")),
        volumes=tuple(_volume(v) for v in _list(raw, "volumes")),
        gpus=tuple(_whole(g, "gpus", minimum=0) for g in _list(raw, "gpus")),
        cpu=_number(raw, "cpu"),  # 0 or null: no limit
        memory_mib=_optional_int(raw, "memory_mib"),
        health_check=_health(raw.get("health_check")),
    )
    if workload.health_check is not None and workload.health_port() is None:
        raise InvalidWorkload(
            f"health_check.port {workload.health_check.port} is not a published TCP port"
        )
    return workload


def _image(raw: dict[str, Any]) -> Image:
    digest = _str(raw, "digest", "image.digest")
    if not DIGEST_RE.match(digest):
        raise InvalidWorkload(f"image.digest must be sha256:<64 hex digits>, got {digest!r}")
    ref = _str(raw, "ref", "image.ref")
    return Image(ref=ref, digest=digest, size=_optional_int(raw, "size", "image.size") or 0)


def _port(raw: Any) -> Port:
    if not isinstance(raw, dict):
        raise InvalidWorkload("each port must be a mapping")
    protocol = str(raw.get("protocol", "tcp")).lower()
    if protocol not in PROTOCOLS:
        raise InvalidWorkload(f"port protocol must be TCP or UDP, got {raw.get('protocol')!r}")
    return Port(
        container_port=_int(raw, "container_port", minimum=1, maximum=65535),
        host_port=_int(raw, "host_port", minimum=1, maximum=65535),
        protocol=protocol,
    )


def _volume(raw: Any) -> Volume:
    if not isinstance(raw, dict):
        raise InvalidWorkload("each volume must be a mapping")
    paths = {}
    for key in ("host_path", "mount_path"):
        path = _str(raw, key, f"volumes.{key}")
        # ':' and ',' separate the fields of podman's -v option.
        if not path.startswith("/") or any(c in path for c in ":,\n"):
            raise InvalidWorkload(f"volumes.{key} must be an absolute path without ':' or ','")
        paths[key] = path
    return Volume(read_only=bool(raw.get("read_only", False)), **paths)


def _health(raw: Any) -> HealthCheck | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidWorkload("health_check must be a mapping or null")
    path = _str(raw, "path", "health_check.path")
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise InvalidWorkload("health_check.path must start with '/' and hold no spaces")
    return HealthCheck(
        path=path,
        port=_int(raw, "port", minimum=1, maximum=65535, where="health_check.port"),
        initial_delay_s=_number(raw, "initial_delay_s", minimum=0.0) or 0.0,
        period_s=_number(raw, "period_s", minimum=0.1) or 10.0,
        timeout_s=_number(raw, "timeout_s", minimum=0.1) or 2.0,
        failure_threshold=_optional_int(raw, "failure_threshold", "health_check.failure_threshold")
        or 3,
    )


def _env(raw: dict[str, Any], key: str) -> dict[str, str]:
    env = _dict(raw, key, optional=True)
    for name, value in env.items():
        if not ENV_RE.match(name):
            raise InvalidWorkload(f"{key}: {name!r} is not a valid variable name")
        # Secrets go through an env file, one variable a line.
        if not isinstance(value, str) or "\n" in value:
            raise InvalidWorkload(f"{key}.{name} must be a string without newlines")
    return dict(env)


def _str(raw: dict[str, Any], key: str, where: str | None = None) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidWorkload(f"{where or key} must be a non-empty string")
    return value


def _name(raw: dict[str, Any], key: str) -> str:
    value = _str(raw, key)
    if not NAME_RE.match(value):
        raise InvalidWorkload(f"{key} {value!r} may hold only letters, digits, '_', '.', '-'")
    return value


def _int(
    raw: dict[str, Any],
    key: str,
    minimum: int,
    maximum: int | None = None,
    where: str | None = None,
) -> int:
    return _whole(raw.get(key), where or key, minimum, maximum)


def _whole(value: Any, where: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidWorkload(f"{where} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise InvalidWorkload(f"{where} is out of range: {value}")
    return value


def _optional_int(raw: dict[str, Any], key: str, where: str | None = None) -> int | None:
    """A count or a size where 0 and null both mean "not set"."""
    value = raw.get(key)
    return None if value is None else (_whole(value, where or key, minimum=0) or None)


def _number(raw: dict[str, Any], key: str, minimum: float = 0.0) -> float | None:
    """Seconds or CPUs, where 0 and null both mean "not set"."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidWorkload(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise InvalidWorkload(f"{key} is out of range: {value}")
    return float(value) or None


def _dict(raw: dict[str, Any], key: str, optional: bool = False) -> dict[str, Any]:
    value = raw.get(key)
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise InvalidWorkload(f"{key} must be a mapping")
    return value


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidWorkload(f"{key} must be a list")
    return value


def _str_items(raw: dict[str, Any], key: str) -> list[str]:
    items = _list(raw, key)
    if not all(isinstance(item, str) for item in items):
        raise InvalidWorkload(f"{key} must be a list of strings")
    return items
