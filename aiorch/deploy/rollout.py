"""Rollouts: a deployment's replicas move to a new revision wave by wave, and each wave must
be healthy before the next one starts.

Pure, like placement: the hub passes the rollout's progress, the clock and what agents last
reported about each replica, and `advance` says what to do next. Replicas on offline hosts
are given the new revision like the others but do not hold a wave back: they show as pending
and converge when their host returns. A host that was online when its wave started and then
went quiet holds the wave like an online one: it is most likely busy with the change (loading
an image, restarting), and passing it unseen would let a broken revision through. A replica
reporting `failed` or `unhealthy` on the new revision, or a wave that is not healthy within
the progress deadline, fails the rollout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from aiorch.deploy.hosts import HostView, Replica
from aiorch.deploy.spec import Rollout

PROGRESSING, PAUSED = "progressing", "paused"
SUCCEEDED, FAILED, ROLLED_BACK, SUPERSEDED = "succeeded", "failed", "rolled_back", "superseded"
ACTIVE = (PROGRESSING, PAUSED)
UNSUCCESSFUL = (FAILED, ROLLED_BACK)
BAD = ("failed", "unhealthy")


def plan_waves(
    rollout: Rollout, replicas: Sequence[Replica], hosts: Mapping[str, HostView]
) -> list[list[int]]:
    """The ordinals of `replicas`, wave by wave: for a canary, the replicas on hosts matching
    the canary selector make the first wave; the others follow in waves of `waveSize`
    (or `maxUnavailable`; replicas are replaced in place, so 0 counts as 1), by ordinal."""
    size = max(1, rollout.wave_size or rollout.max_unavailable or 1)
    ordered = sorted(replicas, key=lambda r: r.ordinal)
    waves: list[list[int]] = []
    if rollout.canary_selector:
        selector = rollout.canary_selector.items()
        canary = [
            r.ordinal
            for r in ordered
            if r.host in hosts and all(hosts[r.host].label(k) == v for k, v in selector)
        ]
        if canary:
            waves.append(canary)
            ordered = [r for r in ordered if r.ordinal not in canary]
    rest = [r.ordinal for r in ordered]
    waves.extend(rest[i : i + size] for i in range(0, len(rest), size))
    return waves


@dataclass(frozen=True, slots=True)
class Observed:
    """A replica as the hub last heard of it from its host's agent."""

    ordinal: int
    host: str
    online: bool
    state: str | None = None  # pending, starting, healthy, unhealthy, failed; None: no report
    template_hash: str | None = None  # of the container the state is about
    reason: str | None = None
    last_seen: float | None = None  # the host's last check-in
    load: float | None = None  # an autoscaled replica's metric, as last reported

    def holds(self, progress: Progress) -> bool:
        """Whether the wave waits for this replica: its host is online, or was when the wave
        started (it went quiet during the wave)."""
        if self.online:
            return True
        started = progress.wave_started_at - progress.offline_after_s
        return self.last_seen is not None and self.last_seen >= started

    def on(self, template: str) -> bool:
        return self.template_hash == template

    def describe(self, template: str) -> str:
        if not self.online:
            return "pending (host offline)"
        if not self.on(template):
            return "pending (still on the previous revision)"
        return f"{self.state}: {self.reason}" if self.reason else str(self.state)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a rollout stands: `wave` indexes `waves`, whose replicas run the target."""

    waves: Sequence[Sequence[int]]
    wave: int
    target_template: str
    wave_started_at: float
    healthy_since: float | None  # when the current wave became healthy, if it has
    pause_s: float
    deadline_s: float
    offline_after_s: float = 0.0  # the silence after which a host counts as offline


@dataclass(frozen=True, slots=True)
class Step:
    action: Literal["wait", "next", "done", "fail"]
    reason: str = ""
    healthy_since: float | None = None


def advance(progress: Progress, observed: Mapping[int, Observed], now: float) -> Step:
    """What the rollout does now: wait, start the next wave, finish, or fail with a reason."""
    target = progress.target_template
    label = f"wave {progress.wave + 1}/{len(progress.waves)}"
    members = [observed[o] for o in progress.waves[progress.wave] if o in observed]
    for replica in members:
        if replica.on(target) and replica.state in BAD:
            return Step("fail", f"{label}: {_name(replica)} is {replica.describe(target)}")
    waiting = [
        r for r in members if r.holds(progress) and not (r.on(target) and r.state == "healthy")
    ]
    if waiting:
        if now - progress.wave_started_at > progress.deadline_s:
            first = waiting[0]
            return Step(
                "fail",
                f"{label} not healthy after {progress.deadline_s:.0f}s: "
                f"{_name(first)} is {first.describe(target)}",
            )
        return Step("wait")
    if progress.wave + 1 >= len(progress.waves):
        return Step("done")
    since = progress.healthy_since if progress.healthy_since is not None else now
    if now - since >= progress.pause_s:
        return Step("next")
    return Step("wait", healthy_since=since)


def _name(replica: Observed) -> str:
    return f"replica {replica.ordinal} on {replica.host}"
