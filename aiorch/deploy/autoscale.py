"""How many replicas an autoscaled deployment wants, from what its replicas report.

Pure: the hub's autoscaling pass reads the reports, the free capacity and the stored
since-when, asks `decide`, and stores or applies what comes back.

`desired = ceil(load / target)` over the replicas' summed load, clipped to `[min, max]` and to
what placement can fit. A change waits until the wanted direction (up or down) has held for
its delay, so a burst shorter than the delay moves nothing. Missing data never scales down: a
replica whose agent is offline, or that has no fresh value yet (still starting), makes the
sum a lower bound, good enough to scale up on and never to scale down on. A site cut off from
the hub therefore holds its count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from aiorch.deploy.spec import Autoscale


@dataclass(frozen=True)
class Pending:
    """A wanted count different from the current one, and since when that direction holds."""

    wanted: int
    since: float


@dataclass(frozen=True)
class Decision:
    load: float | None  # the summed load; None: no replica reported one
    complete: bool  # every replica reported a value
    desired: int  # the count the load asks for, clipped; `current` while data is missing
    pending: Pending | None  # what to store until the next pass
    scale_to: int | None  # the new count now, or None: keep it


def wanted_count(policy: Autoscale, load: float, fit: int) -> int:
    """ceil(load / target), within [min, max] and at most `fit` (never below min: a
    deployment that cannot place its minimum keeps asking for it)."""
    raw = math.ceil(load / policy.target - 1e-9)  # 2.0000000001 replicas is 2
    return max(policy.min, min(raw, policy.max, fit))


def decide(
    policy: Autoscale,
    current: int,
    loads: Sequence[float | None],
    fit: int,
    pending: Pending | None,
    now: float,
) -> Decision:
    """The next step for a deployment running `current` replicas, whose placement could hold
    `fit` replicas in all (counting those it runs), from each replica's load as its online
    agent last reported it (None: no value: offline, or still starting)."""
    bounded = max(policy.min, min(current, policy.max))
    if bounded != current:  # the spec's own count is out of bounds: no waiting for that
        return Decision(None, False, bounded, None, bounded)
    known = [max(0.0, load) for load in loads if load is not None]
    complete = len(known) == len(loads) and bool(loads)
    load = sum(known) if known else None
    desired = current if load is None else wanted_count(policy, load, fit)
    if not complete and desired < current:
        desired = current  # a lower bound says nothing about scaling down
    if desired == current:
        return Decision(load, complete, desired, None, None)
    same_way = pending is not None and (pending.wanted > current) == (desired > current)
    since = pending.since if same_way and pending is not None else now
    delay = policy.up_delay_seconds if desired > current else policy.down_delay_seconds
    if now - since >= delay:
        return Decision(load, complete, desired, None, desired)
    return Decision(load, complete, desired, Pending(desired, since), None)
