"""The desired-state document: the workloads the hub asks an agent to run.

The hub builds each entry as a `Workload` and sends `desired_document(...)`; the agent reads it
back with `parse_workloads`. Both sides import this module, so the document has one definition
and one set of defaults (`published_port`). Whatever reaches `podman run` comes from here, so
anything that could change the meaning of an argument (a ':' in a volume path, a newline in an
env value, a name podman refuses) is refused with a reason, and the hub sees that reason in
the agent's report.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from edge_agent.contract.fields import ContractError, items, mapping, number, text, whole
from edge_agent.contract.image import parse_image
from edge_agent.contract.model import ModelRef, model_entry, parse_model

log = logging.getLogger("aiorch.agent.workloads")

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
PROTOCOLS = ("tcp", "udp")
MAX_PORT = 65535


def published_port(container_port: int, host_port: int | None) -> int:
    """The host port a container port is published on: `hostPort` when the spec gives one,
    else the container port's own number. Placement counts exactly these ports as taken."""
    return host_port or container_port


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
class Metric:
    """The load an autoscaled replica reports: the samples of Prometheus metric `name`,
    summed, from `GET path` on the host port `port` (a container port) is published on."""

    name: str
    port: int
    path: str


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
    cpu: float | None  # None: no limit
    memory_mib: int | None  # None: no limit
    health_check: HealthCheck | None
    models: tuple[ModelRef, ...] = ()  # mounted read-only; the replica waits for their files
    metric: Metric | None = None  # autoscaled replicas only

    @property
    def container_name(self) -> str:
        return f"aiorch-{self.project}-{self.deployment}-{self.replica}"

    def health_port(self) -> int | None:
        """The host port the health check reaches (parsing makes sure there is one)."""
        return None if self.health_check is None else self._tcp_host_port(self.health_check.port)

    def metric_port(self) -> int | None:
        """The host port the load metric is scraped on (parsing makes sure there is one)."""
        return None if self.metric is None else self._tcp_host_port(self.metric.port)

    def _tcp_host_port(self, container_port: int) -> int | None:
        for port in self.ports:
            if port.container_port == container_port and port.protocol == "tcp":
                return port.host_port
        return None


def desired_document(workloads: list[Workload]) -> dict[str, Any]:
    """The document the hub stores as an agent's desired state."""
    return {"workloads": [workload_entry(w) for w in workloads]}


def workload_entry(w: Workload) -> dict[str, Any]:
    """One workload as JSON data; `parse_workload` reads it back unchanged."""
    health = w.health_check
    entry: dict[str, Any] = {
        "id": w.id,
        "deployment": w.deployment,
        "project": w.project,
        "replica": w.replica,
        "template_hash": w.template_hash,
        "image": image_entry(w.image),
        "command": list(w.command),
        "args": list(w.args),
        "env": dict(w.env),
        "secret_env": dict(w.secret_env),
        "ports": [
            {"container_port": p.container_port, "host_port": p.host_port, "protocol": p.protocol}
            for p in w.ports
        ],
        "volumes": volume_entries(w.volumes),
        "gpus": list(w.gpus),
        "cpu": w.cpu,
        "memory_mib": w.memory_mib,
        "health_check": None
        if health is None
        else {
            "path": health.path,
            "port": health.port,
            "initial_delay_s": health.initial_delay_s,
            "period_s": health.period_s,
            "timeout_s": health.timeout_s,
            "failure_threshold": health.failure_threshold,
        },
        "models": [model_entry(m) for m in w.models],
    }
    if w.metric is not None:  # only then: entries of other replicas stay as they were
        entry["metric"] = {"name": w.metric.name, "port": w.metric.port, "path": w.metric.path}
    return entry


def image_entry(image: Image) -> dict[str, Any]:
    return {"ref": image.ref, "digest": image.digest, "size": image.size}


def volume_entries(volumes: tuple[Volume, ...]) -> list[dict[str, Any]]:
    return [
        {"host_path": v.host_path, "mount_path": v.mount_path, "read_only": v.read_only}
        for v in volumes
    ]


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
                raise ContractError("id", "appears more than once")
            workload = parse_workload(entry)
            if workload.container_name in names:
                raise ContractError("container name", f"{workload.container_name} is taken")
        except ContractError as exc:
            valid.pop(wid, None)
            invalid[wid] = Rejected(f"invalid workload: {exc}", template)
            continue
        names.add(workload.container_name)
        valid[wid] = workload
    return list(valid.values()), invalid


def parse_workload(raw: dict[str, Any]) -> Workload:
    """One entry, checked field by field; ContractError names the first wrong field."""
    workload = Workload(
        id=text(raw.get("id"), "id"),
        project=_name(raw, "project"),
        deployment=_name(raw, "deployment"),
        replica=whole(raw.get("replica"), "replica"),
        template_hash=_name(raw, "template_hash"),
        image=_image(mapping(raw.get("image"), "image")),
        command=_strings(raw, "command"),
        args=_strings(raw, "args"),
        env=_env(raw, "env"),
        secret_env=_env(raw, "secret_env"),
        ports=_ports(items(raw.get("ports"), "ports")),
        volumes=tuple(_volume(v) for v in items(raw.get("volumes"), "volumes")),
        gpus=tuple(whole(g, "gpus", maximum=1023) for g in items(raw.get("gpus"), "gpus")),
        cpu=_unset_if_zero(raw.get("cpu"), "cpu"),
        memory_mib=_count(raw.get("memory_mib"), "memory_mib") or None,
        health_check=_health(raw.get("health_check")),
        models=tuple(
            parse_model(m, f"models[{i}]") for i, m in enumerate(items(raw.get("models"), "models"))
        ),
        metric=_metric(raw.get("metric")),
    )
    mounts = [v.mount_path for v in workload.volumes] + [m.mount_path for m in workload.models]
    for mount in mounts:
        if mounts.count(mount) > 1:
            raise ContractError("models.mount_path", f"{mount} is mounted more than once")
    if workload.health_check is not None and workload.health_port() is None:
        raise ContractError(
            "health_check.port", f"{workload.health_check.port} is not a published TCP port"
        )
    if workload.metric is not None and workload.metric_port() is None:
        raise ContractError("metric.port", f"{workload.metric.port} is not a published TCP port")
    return workload


def _image(raw: dict[str, Any]) -> Image:
    digest = text(raw.get("digest"), "image.digest")
    if not DIGEST_RE.match(digest):
        raise ContractError("image.digest", f"must be sha256:<64 hex digits>, got {digest!r}")
    ref = text(raw.get("ref"), "image.ref")
    try:
        parse_image(ref)
    except ValueError as exc:
        raise ContractError("image.ref", str(exc)) from None
    return Image(ref=ref, digest=digest, size=_count(raw.get("size"), "image.size"))


def _ports(raw: list[Any]) -> tuple[Port, ...]:
    ports = tuple(_port(p) for p in raw)
    published = [(p.host_port, p.protocol) for p in ports]
    for port, protocol in published:
        if published.count((port, protocol)) > 1:
            raise ContractError("ports", f"publish host port {port}/{protocol} more than once")
    return ports


def _port(raw: Any) -> Port:
    raw = mapping(raw, "ports")
    protocol = str(raw.get("protocol", "tcp")).lower()
    if protocol not in PROTOCOLS:
        raise ContractError("ports.protocol", f"must be TCP or UDP, got {raw.get('protocol')!r}")
    return Port(
        container_port=whole(raw.get("container_port"), "container_port", 1, MAX_PORT),
        host_port=whole(raw.get("host_port"), "host_port", 1, MAX_PORT),
        protocol=protocol,
    )


def _volume(raw: Any) -> Volume:
    raw = mapping(raw, "volumes")
    paths = {}
    for key in ("host_path", "mount_path"):
        path = text(raw.get(key), f"volumes.{key}")
        # ':' and ',' separate the fields of podman's -v option.
        if not path.startswith("/") or any(c in path for c in ":,\n"):
            raise ContractError(f"volumes.{key}", "must be an absolute path without ':' or ','")
        paths[key] = path
    return Volume(read_only=bool(raw.get("read_only", False)), **paths)


def _health(raw: Any) -> HealthCheck | None:
    if raw is None:
        return None
    raw = mapping(raw, "health_check")
    return HealthCheck(
        path=_url_path(raw, "health_check"),
        port=whole(raw.get("port"), "health_check.port", 1, MAX_PORT),
        initial_delay_s=_unset_if_zero(raw.get("initial_delay_s"), "initial_delay_s") or 0.0,
        period_s=_unset_if_zero(raw.get("period_s"), "period_s", minimum=0.1) or 10.0,
        timeout_s=_unset_if_zero(raw.get("timeout_s"), "timeout_s", minimum=0.1) or 2.0,
        failure_threshold=_count(raw.get("failure_threshold"), "health_check.failure_threshold")
        or 3,
    )


def _metric(raw: Any) -> Metric | None:
    if raw is None:
        return None
    raw = mapping(raw, "metric")
    name = text(raw.get("name"), "metric.name")
    if not METRIC_RE.match(name):
        raise ContractError("metric.name", f"{name!r} is not a Prometheus metric name")
    return Metric(
        name=name,
        port=whole(raw.get("port"), "metric.port", 1, MAX_PORT),
        path=_url_path(raw, "metric"),
    )


def _url_path(raw: dict[str, Any], where: str) -> str:
    path = text(raw.get("path"), f"{where}.path")
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ContractError(f"{where}.path", "must start with '/' and hold no spaces")
    return path


def _env(raw: dict[str, Any], key: str) -> dict[str, str]:
    env = mapping(raw.get(key), key, optional=True)
    for name, value in env.items():
        if not ENV_RE.match(name):
            raise ContractError(key, f"{name!r} is not a valid variable name")
        # Secrets go through an env file, one variable a line.
        if not isinstance(value, str) or "\n" in value:
            raise ContractError(f"{key}.{name}", "must be a string without newlines")
    return dict(env)


def _name(raw: dict[str, Any], key: str) -> str:
    value = text(raw.get(key), key)
    if not NAME_RE.match(value):
        raise ContractError(key, f"{value!r} may hold only letters, digits, '_', '.', '-'")
    return value


def _count(value: Any, where: str) -> int:
    """A count or a size, where null means 0 (not set)."""
    return 0 if value is None else whole(value, where)


def _unset_if_zero(value: Any, where: str, minimum: float = 0.0) -> float | None:
    """Seconds or CPUs, where 0 and null both mean "not set"."""
    return None if value is None else (number(value, where, minimum) or None)


def _strings(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    values = items(raw.get(key), key)
    if not all(isinstance(value, str) for value in values):
        raise ContractError(key, "must be a list of strings")
    return tuple(values)
