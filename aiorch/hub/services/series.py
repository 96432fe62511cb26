"""Series identity: (agent, metric, labels) to a small integer id, cached in memory."""

from __future__ import annotations

import threading

import sqlite_utils

SeriesKey = tuple[str, str, str]  # agent_id, metric, labels as canonical JSON


class SeriesIds:
    """Series id lookups cached in memory; misses are resolved inside the writer transaction."""

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._lock = threading.Lock()

    def get(self, key: SeriesKey) -> int | None:
        with self._lock:
            return self._ids.get(key)

    def resolve(self, db: sqlite_utils.Database, keys: list[SeriesKey]) -> list[int]:
        """Ids for `keys`, creating missing series; call only on the writer thread."""
        out = []
        for key in keys:
            cached = self.get(key)
            if cached is None:
                db.conn.execute(
                    "INSERT OR IGNORE INTO series (agent_id, metric, labels) VALUES (?, ?, ?)", key
                )
                cached = db.conn.execute(
                    "SELECT id FROM series WHERE agent_id = ? AND metric = ? AND labels = ?", key
                ).fetchone()[0]
                with self._lock:
                    self._ids[key] = cached
            out.append(cached)
        return out
