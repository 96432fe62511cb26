"""A durable outbox for telemetry (SQLite, WAL): samples get a sequence number within an epoch
when written, and leave only once the hub has acknowledged them. When the bound is reached the
oldest samples are dropped and counted, so the hub learns exactly how many never arrived."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pending:
    epoch: str
    seq_start: int
    seq_end: int
    dropped: int
    samples: list[dict[str, Any]]


class Outbox:
    def __init__(self, path: Path, max_samples: int = 200_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_samples = max_samples
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=10)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS samples (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, "
            "metric TEXT NOT NULL, value REAL NOT NULL, labels TEXT NOT NULL)"
        )
        self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        # A new file is a new epoch: sequence numbers restart, so (epoch, seq) stays unique.
        self.conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('epoch', ?), ('next_seq', '0'), "
            "('dropped_unreported', '0')",
            [secrets.token_hex(8)],
        )

    def _meta(self, key: str) -> str:
        return str(self.conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()[0])

    @property
    def epoch(self) -> str:
        return self._meta("epoch")

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def append(self, samples: list[tuple[float, str, float, dict[str, str]]]) -> None:
        """Write samples in one transaction, dropping (and counting) the oldest beyond the bound."""
        with self._transaction():
            seq = int(self._meta("next_seq"))
            self.conn.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?)",
                [
                    (seq + i, ts, metric, value, json.dumps(labels, sort_keys=True))
                    for i, (ts, metric, value, labels) in enumerate(samples)
                ],
            )
            self.conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'next_seq'", [str(seq + len(samples))]
            )
            excess = len(self) - self.max_samples
            if excess > 0:
                self.conn.execute(
                    "DELETE FROM samples WHERE seq IN "
                    "(SELECT seq FROM samples ORDER BY seq LIMIT ?)",
                    [excess],
                )
                self.conn.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + ? "
                    "WHERE key = 'dropped_unreported'",
                    [excess],
                )

    def pending(self, limit: int) -> Pending | None:
        """The oldest unacknowledged samples, or None when nothing waits."""
        rows = self.conn.execute(
            "SELECT seq, ts, metric, value, labels FROM samples ORDER BY seq LIMIT ?", [limit]
        ).fetchall()
        if not rows:
            return None
        samples = [
            {"seq": r[0], "ts": r[1], "metric": r[2], "value": r[3], "labels": json.loads(r[4])}
            for r in rows
        ]
        return Pending(
            epoch=self.epoch,
            seq_start=rows[0][0],
            seq_end=rows[-1][0],
            dropped=int(self._meta("dropped_unreported")),
            samples=samples,
        )

    def ack(self, batch: Pending) -> None:
        """The hub stored `batch`: forget its samples and the drops it reported."""
        with self._transaction():
            self.conn.execute("DELETE FROM samples WHERE seq <= ?", [batch.seq_end])
            self.conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) - ? "
                "WHERE key = 'dropped_unreported'",
                [batch.dropped],
            )

    def close(self) -> None:
        self.conn.close()

    def _transaction(self) -> _Tx:
        return _Tx(self.conn)


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
