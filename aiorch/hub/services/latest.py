"""The newest value of every series, kept in memory for `/metrics`.

Prometheus scrapes the fleet's current state; reading it from SQLite on every scrape would
scan the sample table. After a hub restart the map refills with the next uploads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

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

    def forget_agent(self, agent_id: str) -> None:
        with self._lock:
            for key in [k for k in self._values if k[0] == agent_id]:
                del self._values[key]
