"""Heartbeats are coalesced in memory and persisted in one statement about once a second.

A check-in must not cost a database transaction: at 60,000 agents that is thousands of
writes a second for a value that only says "still here". Readers overlay the pending values,
so what the API shows is never behind what agents reported; a hub crash loses at most the
last flush interval of heartbeats, which the next check-ins restore.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, astuple, dataclass
from typing import Any

from aiorch.hub.store import Store


@dataclass(frozen=True)
class Heartbeat:
    last_seen: float
    agent_version: str
    uptime_s: float
    facts_hash: str
    applied_revision: int
    report: str | None = None  # the agent's workload report, JSON; None keeps the last one


class HeartbeatBuffer:
    def __init__(self) -> None:
        self._pending: dict[str, Heartbeat] = {}
        self._lock = threading.Lock()

    def record(self, agent_id: str, beat: Heartbeat) -> None:
        with self._lock:
            self._pending[agent_id] = beat

    def overlay(self, row: dict[str, Any]) -> dict[str, Any]:
        """`row` (an agents row) with any newer, not yet persisted heartbeat applied."""
        with self._lock:
            beat = self._pending.get(row["id"])
        if beat is None:
            return row
        return {**row, **{k: v for k, v in asdict(beat).items() if k != "report"}}

    def last_seen(self, agent_id: str, stored: float | None) -> float | None:
        with self._lock:
            beat = self._pending.get(agent_id)
        return beat.last_seen if beat else stored

    def flush(self, store: Store) -> int:
        """Persist and forget everything pending; returns how many agents were written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = [(*astuple(beat), agent_id) for agent_id, beat in pending.items()]
        store.write(
            lambda db: db.conn.executemany(
                "UPDATE agents SET last_seen = ?, agent_version = ?, uptime_s = ?, "
                "facts_hash = ?, applied_revision = ?, report = COALESCE(?, report), "
                "status = 'online' WHERE id = ?",
                rows,
            )
        )
        return len(rows)
