"""The outbox file's schema and the SQL on it: epochs, their samples and their counts."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Sample = tuple[float, str, float, dict[str, str]]  # (ts, metric, value, labels)

# Estimated bytes a row costs beyond its metric name and labels: ts, value, epoch and seq.
ROW_OVERHEAD = 32
SCHEMA = (
    # The newest epoch (highest id) takes new samples. `dropped` counts its sequence numbers that
    # will never reach the hub, `reported` the most of them the hub has acknowledged hearing
    # of; `count` and `bytes` describe its rows.
    "CREATE TABLE IF NOT EXISTS epochs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "next_seq INTEGER NOT NULL, dropped INTEGER NOT NULL, reported INTEGER NOT NULL, "
    "count INTEGER NOT NULL, bytes INTEGER NOT NULL)",
    # (epoch_id, seq) order is write order, oldest first.
    "CREATE TABLE IF NOT EXISTS samples (epoch_id INTEGER NOT NULL, seq INTEGER NOT NULL, "
    "ts REAL NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL, labels TEXT NOT NULL, "
    "size INTEGER NOT NULL, PRIMARY KEY (epoch_id, seq)) WITHOUT ROWID",
)


@dataclass(frozen=True)
class Pending:
    epoch: str
    seq_start: int
    seq_end: int
    dropped: int
    samples: list[dict[str, Any]]


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (e.g. after SQLITE_FULL).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def current_epoch(conn: sqlite3.Connection) -> tuple[int, str, int]:
    """(id, name, next_seq) of the epoch that takes new samples."""
    row = conn.execute("SELECT id, name, next_seq FROM epochs ORDER BY id DESC LIMIT 1").fetchone()
    return int(row[0]), str(row[1]), int(row[2])


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0) FROM epochs")
    count, size = row.fetchone()
    return int(count), int(size)


def dropped_total(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(SUM(dropped), 0) FROM epochs").fetchone()[0])


def new_epoch(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO epochs VALUES "
        "((SELECT COALESCE(MAX(id), 0) + 1 FROM epochs), ?, 0, 0, 0, 0, 0)",
        [secrets.token_hex(8)],
    )


def insert(conn: sqlite3.Connection, samples: list[Sample], skipped: int = 0) -> None:
    """Append to the current epoch. `skipped` sequence numbers (samples that could not be
    written earlier) are left out and counted as dropped, so the hub sees a gap it can explain."""
    epoch_id, _, next_seq = current_epoch(conn)
    start = next_seq + skipped
    rows = []
    total = 0
    for i, (ts, metric, value, labels) in enumerate(samples):
        text = json.dumps(labels, sort_keys=True, separators=(",", ":"))
        size = len(metric) + len(text) + ROW_OVERHEAD
        total += size
        rows.append((epoch_id, start + i, ts, metric, value, text, size))
    conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute(
        "UPDATE epochs SET next_seq = ?, dropped = dropped + ?, count = count + ?, "
        "bytes = bytes + ? WHERE id = ?",
        [start + len(rows), skipped, len(rows), total, epoch_id],
    )


def retire_finished_epochs(conn: sqlite3.Connection) -> None:
    """Forget older epochs that have nothing left to send: no samples, no unreported drops."""
    conn.execute(
        "DELETE FROM epochs WHERE id < ? AND count = 0 AND reported >= dropped",
        [current_epoch(conn)[0]],
    )


def pending(conn: sqlite3.Connection, limit: int) -> Pending | None:
    current = current_epoch(conn)[0]
    epochs = conn.execute(
        "SELECT id, name, next_seq, dropped, count FROM epochs "
        "WHERE count > 0 OR (id < ? AND dropped > reported) ORDER BY id LIMIT 1",
        [current],
    ).fetchone()
    if epochs is None:
        return None
    epoch_id, name, next_seq, dropped, count = epochs
    if count == 0:  # a finished epoch owes the hub only its final drop count
        return Pending(name, next_seq, next_seq, dropped, [])
    rows = conn.execute(
        "SELECT seq, ts, metric, value, labels FROM samples WHERE epoch_id = ? "
        "ORDER BY seq LIMIT ?",
        [epoch_id, limit],
    ).fetchall()
    return Pending(
        epoch=name,
        seq_start=rows[0][0],
        seq_end=rows[-1][0],
        dropped=dropped,
        samples=[
            {"seq": r[0], "ts": r[1], "metric": r[2], "value": r[3], "labels": json.loads(r[4])}
            for r in rows
        ],
    )


def ack(conn: sqlite3.Connection, batch: Pending) -> None:
    _forget(conn, batch, "reported = MAX(reported, :heard)")


def drop(conn: sqlite3.Connection, batch: Pending) -> None:
    # A batch without samples only carried drops: the hub will not hear of them, so stop telling.
    _forget(
        conn, batch, "dropped = dropped + :gone" + ("" if batch.samples else ", reported = dropped")
    )


def _forget(conn: sqlite3.Connection, batch: Pending, settle: str) -> None:
    """Delete `batch`'s samples (and any older of its epoch) and `settle` the epoch's counts
    (`:gone` the samples deleted, `:heard` the drops the batch reported)."""
    with transaction(conn):
        row = conn.execute("SELECT id FROM epochs WHERE name = ?", [batch.epoch]).fetchone()
        if row is None:
            return
        where = "FROM samples WHERE epoch_id = ? AND seq <= ?"
        args = [row[0], batch.seq_end]
        count = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) {where}", args)
        gone, gone_bytes = count.fetchone()
        conn.execute(f"DELETE {where}", args)
        conn.execute(
            f"UPDATE epochs SET count = count - :gone, bytes = bytes - :bytes, {settle} "
            "WHERE id = :id",
            {"gone": gone, "bytes": gone_bytes, "heard": batch.dropped, "id": row[0]},
        )
        retire_finished_epochs(conn)


def migrate_v1(conn: sqlite3.Connection) -> None:
    """Files from before epochs had a table of their own: one epoch in a key-value `meta`."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    conn.execute("ALTER TABLE samples RENAME TO samples_v1")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO samples SELECT 1, seq, ts, metric, value, labels, "
        f"length(metric) + length(labels) + {ROW_OVERHEAD} FROM samples_v1"
    )
    conn.execute(
        "INSERT INTO epochs SELECT 1, ?, ?, ?, 0, COUNT(*), COALESCE(SUM(size), 0) FROM samples",
        [meta["epoch"], int(meta["next_seq"]), int(meta["dropped_unreported"])],
    )
    conn.execute("DROP TABLE samples_v1")
    conn.execute("DROP TABLE meta")
