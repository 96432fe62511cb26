"""Policies the hub applies before it accepts a deployment: project quotas, data residency and
allowed image sources. Each check returns a `PolicyDecision`, allow or deny with the reason,
which the hub writes to its audit log whatever the outcome; `enforce` refuses on any deny.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aiorch.deploy.hosts import HostView
from aiorch.deploy.placement import Plan
from aiorch.deploy.spec import DeploymentSpec
from aiorch.errors import Forbidden
from edge_agent.contract.image import parse_image


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    policy: str  # quota, residency, image-source, require-digest
    outcome: Outcome
    reason: str

    def to_audit(self) -> dict[str, str]:
        return {"policy": self.policy, "outcome": str(self.outcome), "reason": self.reason}


def _decide(policy: str, ok: bool, allow: str, deny: str) -> PolicyDecision:
    return PolicyDecision(policy, Outcome.ALLOW if ok else Outcome.DENY, allow if ok else deny)


@dataclass(frozen=True, slots=True)
class Quota:
    """A project's ceiling over all its deployments; None is no limit."""

    project: str
    max_gpus: int | None = None
    max_replicas: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """What a project's *other* deployments hold now."""

    gpus: int = 0
    replicas: int = 0


def check_quota(spec: DeploymentSpec, quota: Quota | None, in_use: Usage) -> PolicyDecision:
    """The deployment's full size (replicas x GPUs, placed or not) plus what the project's other
    deployments use must fit the quota: a replica waiting for room still counts."""
    project = spec.project
    if quota is None:
        return PolicyDecision("quota", Outcome.ALLOW, f"project {project} has no quota")
    replicas = spec.spec.replicas
    gpus = replicas * spec.spec.resources.gpus
    over = [
        f"{asked} {unit} requested + {used} in use > quota {limit}"
        for asked, used, limit, unit in (
            (gpus, in_use.gpus, quota.max_gpus, "GPUs"),
            (replicas, in_use.replicas, quota.max_replicas, "replicas"),
        )
        if limit is not None and asked + used > limit
    ]
    limits = f"quota {_limit(quota.max_gpus)} GPUs, {_limit(quota.max_replicas)} replicas"
    allow = (
        f"project {project}: {gpus} GPUs + {in_use.gpus} in use, "
        f"{replicas} replicas + {in_use.replicas} in use, within {limits}"
    )
    return _decide("quota", not over, allow, f"project {project}: {'; '.join(over)}")


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class ResidencyPolicy:
    """The regions a project's workloads may run in, whatever their specs say: pass `regions`
    to `plan_placement(regions=...)` so placement never looks elsewhere."""

    project: str
    regions: frozenset[str]


def check_residency(
    spec: DeploymentSpec, policy: ResidencyPolicy | None, plan: Plan, hosts: Sequence[HostView]
) -> PolicyDecision:
    """Residency holds when the spec's regions overlap the policy's and every replica of the
    plan sits on a host inside both; the reason says which regions and how many hosts were
    left out for it."""
    spec_regions = spec.spec.placement.residency
    allowed = frozenset(spec_regions.region) if spec_regions else None
    if policy is not None:
        if allowed is not None and not allowed & policy.regions:
            return PolicyDecision(
                "residency",
                Outcome.DENY,
                f"spec residency {_regions(allowed)} is outside the regions allowed for "
                f"project {policy.project}: {_regions(policy.regions)}",
            )
        allowed = policy.regions if allowed is None else allowed & policy.regions
    if allowed is None:
        return PolicyDecision("residency", Outcome.ALLOW, "no residency asked or imposed")
    region = {host.name: host.region for host in hosts}
    outside = [
        f"replica {r.ordinal} on {r.host} (region {region.get(r.host) or 'unknown'})"
        for r in plan.replicas
        if region.get(r.host) not in allowed
    ]
    left_out = sum(1 for host in hosts if host.region not in allowed)
    where = _regions(allowed)
    return _decide(
        "residency",
        not outside,
        f"{len(plan.replicas)} replica(s) in {where}; {left_out} host(s) elsewhere not considered",
        f"outside {where}: {', '.join(outside)}",
    )


def _regions(regions: Iterable[str]) -> str:
    return ", ".join(sorted(regions))


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    """The hub's image store (references and/or `sha256:` digests) and whether specs must pin
    their image by digest. The fleet has no internet: an image not in the store cannot run."""

    store: frozenset[str]
    require_digest: bool = False


def check_image(spec: DeploymentSpec, policy: ImagePolicy) -> list[PolicyDecision]:
    """`image-source` (the image is in the store: by digest when pinned, else by name and
    tag) and, when the policy requires it, `require-digest`."""
    ref = spec.spec.image_ref
    decisions = []
    if policy.require_digest:
        decisions.append(
            _decide(
                "require-digest",
                ref.pinned,
                f"image {spec.spec.image} is pinned by digest",
                f"image {spec.spec.image} is referenced by tag only; "
                "policy requireDigest needs name@sha256:<digest>",
            )
        )
    digests, names = _store_index(policy.store)
    known = ref.digest in digests if ref.digest else f"{ref.name}:{ref.tag}" in names
    decisions.append(
        _decide(
            "image-source",
            known,
            f"image {spec.spec.image} is in the hub's image store",
            f"image {spec.spec.image} is not in the hub's image store; load it there first",
        )
    )
    return decisions


def _store_index(store: Iterable[str]) -> tuple[set[str], set[str]]:
    digests: set[str] = set()
    names: set[str] = set()
    for entry in store:
        if entry.startswith("sha256:"):
            digests.add(entry)
            continue
        ref = parse_image(entry)
        if ref.digest:
            digests.add(ref.digest)
        if ref.tag:
            names.add(f"{ref.name}:{ref.tag}")
    return digests, names


def enforce(decisions: Iterable[PolicyDecision]) -> None:
    """Refuse (Forbidden, 403) when any decision denies, with every denial's reason."""
    denied = [d.reason for d in decisions if d.outcome is Outcome.DENY]
    if denied:
        raise Forbidden("; ".join(denied))
