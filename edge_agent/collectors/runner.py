"""Runs every collector once a round and keeps one broken source from costing the others."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from edge_agent.collectors.cost import AgentCost
from edge_agent.outbox import Sample

log = logging.getLogger("aiorch.agent.collectors")

# Distinct errors remembered for log-once; a source whose messages never repeat can't grow
# memory without bound.
MAX_REMEMBERED_ERRORS = 256


class Collector(Protocol):
    name: str

    def collect(self, now: float) -> list[Sample]: ...

    def close(self) -> None: ...


class Collectors:
    """All collectors of a round, timed one by one. A collector that raises loses only its own
    samples; each distinct error is logged once, and every round reports the agent's own cost."""

    def __init__(self, collectors: Sequence[Collector], cost: AgentCost | None = None) -> None:
        self.collectors = list(collectors)
        self.cost = cost or AgentCost()
        self.errors: Counter[str] = Counter({c.name: 0 for c in self.collectors})
        self._logged: set[tuple[str, str]] = set()

    def collect(self, now: float) -> list[Sample]:
        samples: list[Sample] = []
        durations_ns: dict[str, int] = {}
        for collector in self.collectors:
            start = time.perf_counter_ns()
            try:
                samples.extend(_finite(collector.collect(now)))
            except Exception as exc:  # one broken source must not silence the others
                self._failed(collector.name, exc)
            durations_ns[collector.name] = time.perf_counter_ns() - start
        samples.extend(self.cost.samples(now, durations_ns, self.errors))
        return samples

    def close(self) -> None:
        for collector in self.collectors:
            collector.close()

    def _failed(self, name: str, exc: Exception) -> None:
        self.errors[name] += 1
        key = (name, f"{type(exc).__name__}: {exc}")
        if key in self._logged or len(self._logged) >= MAX_REMEMBERED_ERRORS:
            return
        self._logged.add(key)
        log.error("collector %s failed: %s (logged once)", name, key[1], exc_info=exc)


def _finite(samples: list[Sample]) -> list[Sample]:
    """Numbers only: JSON has no NaN or infinity, and the hub would refuse the whole batch."""
    return [
        (ts, metric, float(value), labels)
        for ts, metric, value, labels in samples
        if math.isfinite(value)
    ]
