"""The newest value of every series, kept in memory for `/metrics`.

Prometheus scrapes the fleet's current state; reading it from SQLite on every scrape would
scan the sample table. After a hub restart the map refills with the next uploads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any

from aiorch.hub.schemas import TelemetryBatch
from aiorch.hub.services.series import SeriesKey


@dataclass(frozen=True)
class Latest:
    ts: float
    value: float


class LatestValues:
    def __init__(self) -> None:
        self._values: dict[SeriesKey, Latest] = {}
        self._lock = threading.Lock()

    def update(self, agent_id: str, batch: TelemetryBatch, keys: list[SeriesKey]) -> None:
        newest: dict[int, tuple[float, float]] = {}
        for _, ts, series, value in batch.samples:
            if series not in newest or ts >= newest[series][0]:
                newest[series] = (ts, value)
        with self._lock:
            for series, (ts, value) in newest.items():
                key = keys[series]
                current = self._values.get(key)
                if current is None or ts >= current.ts:
                    self._values[key] = Latest(ts, value)

    def snapshot(self) -> dict[SeriesKey, Latest]:
        with self._lock:
            return dict(self._values)

    def forget_agents(self, agent_ids: Collection[str]) -> int:
        """Drop the values of agents that are gone (retired), so `/metrics` stops showing
        them; returns how many were dropped."""
        return self._drop(lambda key, _: key[0] in agent_ids)

    def forget_older_than(self, cutoff: float) -> int:
        """Drop values sampled before `cutoff`: a series no agent reports any more is stale."""
        return self._drop(lambda _, latest: latest.ts < cutoff)

    def _drop(self, doomed: Callable[[SeriesKey, Latest], bool]) -> int:
        with self._lock:
            keys = [key for key, latest in self._values.items() if doomed(key, latest)]
            for key in keys:
                del self._values[key]
        return len(keys)


class PerMinute:
    """A scrape figure recomputed at most once per clock minute and key. Sums over a day of
    one-minute rollups move little within a minute, and Prometheus scrapes every few seconds:
    rescanning them on each scrape would put a day of rollups on the scrape path."""

    def __init__(self) -> None:
        self._cached: dict[Hashable, tuple[int, Any]] = {}
        self._lock = threading.Lock()

    def get(self, now: float, key: Hashable, compute: Callable[[], Any]) -> Any:
        minute = int(now // 60)
        with self._lock:
            hit = self._cached.get(key)
        if hit is not None and hit[0] == minute:
            return hit[1]
        value = compute()
        with self._lock:
            self._cached[key] = (minute, value)
        return value
