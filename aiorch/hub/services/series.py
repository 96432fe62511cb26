"""Small integer ids for series (agent, metric, labels) and streams (agent, epoch).

Samples refer to both by id, which keeps the sample table narrow and its inserts fast.
Lookups are cached in memory; misses are resolved inside the writer transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import sqlite_utils

SeriesKey = tuple[str, str, str]  # agent_id, metric, labels as canonical JSON


class InternedIds:
    def __init__(self, table: str, columns: tuple[str, ...]) -> None:
        names = ", ".join(columns)
        where = " AND ".join(f"{c} = ?" for c in columns)
        marks = ", ".join("?" for _ in columns)
        self._insert = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        self._select = f"SELECT id FROM {table} WHERE {where}"
        self._ids: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> int | None:
        with self._lock:
            return self._ids.get(key)

    def resolve(self, db: sqlite_utils.Database, keys: Sequence[tuple[str, ...]]) -> list[int]:
        """Ids for `keys`, creating missing rows; call only on the writer thread."""
        out = []
        for key in keys:
            found = self.get(key)
            if found is None:
                db.conn.execute(self._insert, key)
                found = int(db.conn.execute(self._select, key).fetchone()[0])
                with self._lock:
                    self._ids[key] = found
            out.append(found)
        return out

    def forget(self) -> None:
        """Drop the cache (after a transaction that created ids was rolled back)."""
        with self._lock:
            self._ids.clear()

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent's cached ids once its rows are deleted (keys start with the agent)."""
        with self._lock:
            for key in [k for k in self._ids if k[0] == agent_id]:
                del self._ids[key]


def series_ids() -> InternedIds:
    return InternedIds("series", ("agent_id", "metric", "labels"))


def stream_ids() -> InternedIds:
    return InternedIds("streams", ("agent_id", "epoch"))
