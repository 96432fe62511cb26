"""Heartbeats are coalesced in memory and persisted in one statement about once a second.

A check-in must not cost a database transaction: at 60,000 agents that is thousands of
writes a second for a value that only says "still here". Readers overlay the pending values,
so what the API shows is never behind what agents reported; a hub crash loses at most the
last flush interval of heartbeats, which the next check-ins restore.

A flush never loses the fleet's heartbeats to one bad value or one failed write: a row the
database refuses is skipped alone (and logged), and a write that fails puts its beats back,
unless a newer beat of the same agent arrived meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import asdict, astuple, dataclass
from typing import Any

import sqlite_utils

from aiorch.hub.store import Store

log = logging.getLogger("aiorch.hub.heartbeats")
_UPDATE = (
    "UPDATE agents SET last_seen = ?, agent_version = ?, uptime_s = ?, facts_hash = ?, "
    "applied_revision = ?, report = COALESCE(?, report), status = 'online' WHERE id = ?"
)


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
        """Persist and forget everything pending; returns how many agents were written.

        If the write fails, the beats go back (newer ones recorded since win) and it raises."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = [(*astuple(beat), agent_id) for agent_id, beat in pending.items()]
        try:
            return store.write(lambda db: _write_rows(db, rows))
        except Exception:
            with self._lock:
                self._pending = {**pending, **self._pending}
            raise


def _write_rows(db: sqlite_utils.Database, rows: list[tuple[Any, ...]]) -> int:
    """All rows in one statement; if the database refuses one, each row alone, skipping
    the refused ones, so one agent's bad value never holds back the others'."""
    try:
        with db.atomic():
            db.conn.executemany(_UPDATE, rows)
        return len(rows)
    except (sqlite3.Error, OverflowError, ValueError):
        pass
    written = 0
    for row in rows:
        try:
            with db.atomic():
                db.conn.execute(_UPDATE, row)
            written += 1
        except (sqlite3.Error, OverflowError, ValueError) as exc:
            log.error("heartbeat of agent %s not stored: %s", row[-1], exc)
    return written
