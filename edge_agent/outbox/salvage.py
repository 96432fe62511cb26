"""What survives in a damaged outbox file, read the ways its b-tree still allows, and copied
into a fresh one."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.outbox import sql

log = logging.getLogger("aiorch.agent.outbox")

_SIDES = (">= ? ORDER BY seq", "<= ? ORDER BY seq DESC")


def _pad_truncated(path: Path) -> None:
    """A file cut short is smaller than its header says, and SQLite then refuses to read any of
    it; padded with zeros back to that size, the pages that survived become readable again."""
    try:
        with path.open("r+b") as file:
            header = file.read(100)
            if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
                return
            page_size = int.from_bytes(header[16:18], "big")
            declared = (65536 if page_size == 1 else page_size) * int.from_bytes(
                header[28:32], "big"
            )
            if file.seek(0, os.SEEK_END) < declared:
                file.truncate(declared)
    except OSError as exc:
        log.warning("cannot pad %s for salvage: %s", path, exc)


def _readable_epochs(old: sqlite3.Connection) -> list[tuple[Any, ...]]:
    try:
        query = "SELECT id, name, next_seq, dropped, reported, count FROM epochs"
        rows = old.execute(query).fetchall()
    except sqlite3.DatabaseError:
        return []
    return [r for r in rows if [type(v) for v in r] == [int, str, int, int, int, int]]


def _readable_rows(old: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    """Sample rows of a damaged file, read the ways its b-tree still allows: forwards up to the
    first unreadable page, backwards from the end down to it, then key by key across the gap,
    which also finds the rows a WITHOUT ROWID table keeps in interior pages."""
    select = "SELECT epoch_id, seq, ts, metric, value, labels, size FROM samples"
    gap_start: tuple[int, int] | None = None
    for row in _scan(old, f"{select} ORDER BY epoch_id, seq"):
        gap_start = (row[0], row[1])
        yield row
    gap_end: tuple[int, int] | None = None
    for row in _scan(old, f"{select} ORDER BY epoch_id DESC, seq DESC"):
        if gap_start is not None and (row[0], row[1]) <= gap_start:
            break
        gap_end = (row[0], row[1])
        yield row
    if gap_start is None or gap_end is None or gap_start[0] != gap_end[0]:
        return
    # A seek for a key may descend into the damaged child on one side of it, so try both sides.
    probes = [f"{select} WHERE epoch_id = ? AND seq {side} LIMIT 1" for side in _SIDES]
    for seq in range(gap_start[1] + 1, gap_end[1]):
        for probe in probes:
            found = [row for row in _scan(old, probe, gap_start[0], seq) if row[1] == seq]
            if found:
                yield found[0]
                break


def _scan(old: sqlite3.Connection, query: str, *args: int) -> Iterator[tuple[Any, ...]]:
    """The rows of `query` up to the first unreadable page, skipping rows that came back
    garbled."""
    try:
        for row in old.execute(query, args):
            if _row_ok(row):
                yield row
    except sqlite3.DatabaseError:
        return


def _row_ok(row: tuple[Any, ...]) -> bool:
    epoch_id, seq, ts, metric, value, labels, size = row
    if not (type(epoch_id) is int and type(seq) is int and type(size) is int):
        return False
    if not (isinstance(ts, float | int) and isinstance(value, float | int)):
        return False
    if not (isinstance(metric, str) and isinstance(labels, str)):
        return False
    try:
        return isinstance(json.loads(labels), dict)
    except ValueError:
        return False


def salvage(conn: sqlite3.Connection, damaged: Path) -> tuple[int, int, int]:
    """Copy what can still be read from `damaged` into the fresh file `conn`, old rows keeping
    their (epoch, seq) so the hub stores each sample once; rows lost with the damage are counted
    as dropped of their epoch, and a new epoch takes new samples. Returns (samples salvaged,
    those without a readable epoch, resent as new; samples lost)."""
    _pad_truncated(damaged)
    old = sqlite3.connect(str(damaged))
    try:
        epochs = _readable_epochs(old)
        conn.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, 0)", epochs)
        conn.executemany(
            "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            _readable_rows(old),
        )
    finally:
        old.close()
    salvaged = int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    dropped_before = sql.dropped_total(conn)
    # Every SET expression sees the old row, so `count` here is the damaged file's count.
    conn.execute(
        "UPDATE epochs SET dropped = dropped + MAX(0, count - "
        "(SELECT COUNT(*) FROM samples WHERE epoch_id = epochs.id)), "
        "count = (SELECT COUNT(*) FROM samples WHERE epoch_id = epochs.id), "
        "bytes = (SELECT COALESCE(SUM(size), 0) FROM samples WHERE epoch_id = epochs.id)"
    )
    lost = sql.dropped_total(conn) - dropped_before
    orphans = "FROM samples WHERE epoch_id NOT IN (SELECT id FROM epochs)"
    rows = conn.execute(f"SELECT ts, metric, value, labels {orphans} ORDER BY epoch_id, seq")
    unknown = [(ts, metric, value, json.loads(labels)) for ts, metric, value, labels in rows]
    conn.execute(f"DELETE {orphans}")
    sql.new_epoch(conn)
    # Samples whose epoch is unreadable can only travel as new samples of the new epoch.
    sql.insert(conn, unknown)
    sql.retire_finished_epochs(conn)
    return salvaged, len(unknown), lost
