"""Host facts: the fields of an agent's facts document that the hub reads.

The agent reports many facts (os, disks, interfaces...); the hub places workloads and counts
GPUs from a few of them, named here once. `parse_facts` is strict about those and only checks
that the rest is plain JSON, so the hub refuses bad facts at enrollment and check-in (one
agent's facts can never break another's answer) and the agent refuses to send them.
A section the agent failed to collect is null: it reads as "none" (no GPUs, no memory).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edge_agent.contract.fields import ContractError, items, mapping, plain_json, text, whole
from edge_agent.contract.model import DIGEST_RE

HOSTNAME = "hostname"
GPUS = "gpus"
CPU = "cpu"
CPU_LOGICAL = "logical_count"  # under CPU
MEMORY_TOTAL = "memory_total_bytes"
CONTAINER_RUNTIME = "container_runtime"
SITE_RELEASE = "site_release"  # {"version", "digest"} of /etc/aiorch/site-release.json, or null
MODELS = "models"  # the digests of the models in the host's model cache
SSH_HOST_KEYS = "ssh_host_keys"  # "TYPE BASE64" of each /etc/ssh/ssh_host_*_key.pub
SITE_RELEASE_FILE = "/etc/aiorch/site-release.json"

MAX_GPUS = 1024
MAX_GPU_MEMORY = 2**44  # 16 TiB on one GPU
MAX_MEMORY = 2**56  # 64 PiB on one host
MAX_CPUS = 2**20
MAX_KEYS = 4096
MAX_MODELS = 4096
MAX_HOST_KEYS = 16
# One public key as known_hosts holds it: nothing else can ride along into that file.
SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}\Z"
)


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    memory_total_bytes: int
    simulated: bool  # from a simulated backend: never counted as a real GPU

    @property
    def memory_mib(self) -> int:
        return self.memory_total_bytes // 2**20


@dataclass(frozen=True)
class SiteRelease:
    version: int
    digest: str


@dataclass(frozen=True)
class HostFacts:
    hostname: str | None
    gpus: tuple[GpuFacts, ...]
    cpu_logical: int
    memory_total_bytes: int
    container_runtime: str | None  # "podman", or None where the agent found none
    runtime_reported: bool  # agents older than the runtime fact say nothing
    site_release: SiteRelease | None = None  # the bundle release the host was provisioned from
    models: tuple[str, ...] = ()  # model digests in its cache
    ssh_host_keys: tuple[str, ...] = ()  # what the hub pins for a machine it provisioned

    @property
    def can_run_workloads(self) -> bool:
        """Whether placement may send workloads here: agents that do not report a runtime
        are taken at their word that they can run them."""
        return self.container_runtime is not None or not self.runtime_reported

    @property
    def gpus_simulated(self) -> bool:
        return any(gpu.simulated for gpu in self.gpus)


def parse_facts(document: Any) -> HostFacts:
    """The facts the hub reads; ContractError names the first wrong field."""
    document = mapping(document, "facts")
    if len(document) > MAX_KEYS:
        raise ContractError("facts", f"have more than {MAX_KEYS} keys")
    plain_json(document, "")
    hostname = document.get(HOSTNAME)
    runtime = document.get(CONTAINER_RUNTIME)
    cpu = mapping(document.get(CPU), CPU, optional=True)
    return HostFacts(
        hostname=None if hostname is None else text(hostname, HOSTNAME, max_length=253),
        gpus=_gpus(items(document.get(GPUS), GPUS)),
        cpu_logical=_size(cpu.get(CPU_LOGICAL), f"{CPU}.{CPU_LOGICAL}", MAX_CPUS),
        memory_total_bytes=_size(document.get(MEMORY_TOTAL), MEMORY_TOTAL, MAX_MEMORY),
        container_runtime=None if runtime is None else text(runtime, CONTAINER_RUNTIME, 64),
        runtime_reported=CONTAINER_RUNTIME in document,
        site_release=site_release(document.get(SITE_RELEASE)),
        models=_models(items(document.get(MODELS), MODELS)),
        ssh_host_keys=_host_keys(items(document.get(SSH_HOST_KEYS), SSH_HOST_KEYS)),
    )


def site_release(raw: Any) -> SiteRelease | None:
    """The site-release fact (the role writes it from the imported bundle), or None."""
    if raw is None:
        return None
    raw = mapping(raw, SITE_RELEASE)
    digest = text(raw.get("digest"), f"{SITE_RELEASE}.digest")
    if not DIGEST_RE.match(digest):
        raise ContractError(f"{SITE_RELEASE}.digest", "must be sha256:<64 hex digits>")
    return SiteRelease(whole(raw.get("version"), f"{SITE_RELEASE}.version"), digest)


def _models(raw: list[Any]) -> tuple[str, ...]:
    if len(raw) > MAX_MODELS:
        raise ContractError(MODELS, f"lists more than {MAX_MODELS} models")
    for position, digest in enumerate(raw):
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise ContractError(f"{MODELS}[{position}]", "must be sha256:<64 hex digits>")
    return tuple(raw)


def _host_keys(raw: list[Any]) -> tuple[str, ...]:
    if len(raw) > MAX_HOST_KEYS:
        raise ContractError(SSH_HOST_KEYS, f"lists more than {MAX_HOST_KEYS} keys")
    for position, key in enumerate(raw):
        if not isinstance(key, str) or len(key) > 4096 or not SSH_KEY_RE.match(key):
            raise ContractError(
                f"{SSH_HOST_KEYS}[{position}]", "must be 'TYPE BASE64' of an SSH key"
            )
    return tuple(raw)


def stored_facts(stored: str) -> HostFacts | None:
    """Facts as the hub stored them, or None where they no longer parse (stored before the
    hub checked facts at the door): such a host has no usable facts, and says so."""
    try:
        return parse_facts(json.loads(stored))
    except ValueError:  # ContractError, or JSON that is not
        return None


def _gpus(raw: list[Any]) -> tuple[GpuFacts, ...]:
    if len(raw) > MAX_GPUS:
        raise ContractError(GPUS, f"lists more than {MAX_GPUS} GPUs")
    gpus = []
    for position, entry in enumerate(raw):
        where = f"{GPUS}[{position}]"
        entry = mapping(entry, where)
        gpus.append(
            GpuFacts(
                index=whole(entry.get("index"), f"{where}.index", 0, MAX_GPUS - 1),
                name=text(entry.get("name"), f"{where}.name", max_length=256),
                memory_total_bytes=_size(
                    entry.get("memory_total_bytes"), f"{where}.memory_total_bytes", MAX_GPU_MEMORY
                ),
                simulated=_flag(entry.get("simulated", False), f"{where}.simulated"),
            )
        )
    indices = [gpu.index for gpu in gpus]
    for index in indices:
        if indices.count(index) > 1:
            raise ContractError(GPUS, f"list GPU index {index} more than once")
    return tuple(gpus)


def _size(value: Any, where: str, maximum: int) -> int:
    """A count or a size, where null (not collected) means 0."""
    return 0 if value is None else whole(value, where, 0, maximum)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ContractError(where, f"must be true or false, got {value!r}")
    return value
