"""What placement sees of the fleet: one `HostView` per host, built by the hub from inventory,
agent facts and check-ins, and the replicas a deployment already has."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Selector keys answered by a host's own fields rather than its labels.
HOST_FIELDS = ("site", "region", "role", "host")


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    product: str
    memory_mib: int


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as one deployment sees it: `allocated_gpus`, `free_cpu`, `free_memory_mib` and
    `used_host_ports` (every port published there, `hostPort` or else `containerPort`) count
    every *other* deployment's replicas, never this deployment's own (they come in as
    `Replica`s), so a re-plan can keep replicas exactly where they are."""

    name: str
    site: str = ""
    region: str = ""
    role: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    online: bool = True
    ready: bool = True
    drifted: bool = False
    gpus: tuple[Gpu, ...] = ()
    allocated_gpus: frozenset[int] = frozenset()
    free_cpu: float = 0.0
    free_memory_mib: int = 0
    used_host_ports: frozenset[int] = frozenset()
    # Why the host's latest GPU acceptance record keeps GPU work off it ("gpu acceptance
    # failed on HOST: ..."); None when it was accepted or has no record.
    gpu_acceptance_failed: str | None = None

    def label(self, key: str) -> str | None:
        """The value a selector key sees: site/region/role/host from the host, else a label."""
        if key in HOST_FIELDS:
            return self.name if key == "host" else getattr(self, key) or None
        return self.labels.get(key)


@dataclass(frozen=True, slots=True)
class Replica:
    """A replica of one deployment: its stable ordinal, host and GPU indices on that host."""

    ordinal: int
    host: str
    gpus: tuple[int, ...] = ()
