"""A durable outbox for telemetry (SQLite, WAL).

Every sample gets an (epoch, seq) when written and leaves only once the hub has acknowledged it or
a bound dropped it. A batch's `dropped` is how many of its epoch's sequence numbers will never
reach the hub so far: a running total, so a batch sent twice never counts a drop twice, and the
hub can tell a quiet agent from a lossy one. An older epoch whose last samples were dropped
reports its final total in a batch without samples. The outbox never raises for the agent's
sake; it absorbs three kinds of trouble:

- bounds (count, bytes, age): the oldest samples are dropped and counted;
- an unwritable file (read-only state dir, full disk): samples are counted in memory and, once a
  write works again, their sequence numbers are skipped and reported as dropped;
- a damaged file: it is moved aside as `<name>.corrupt-<utc time>`, the samples still readable in
  it are copied into a fresh file under their old (epoch, seq), and new samples start a new epoch,
  because the damaged file's next sequence number can no longer be trusted.

One batch is in flight at a time: pending(), upload, ack(), with no append() in between.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.trouble import Trouble

log = logging.getLogger("aiorch.agent.outbox")

Sample = tuple[float, str, float, dict[str, str]]  # (ts, metric, value, labels)
T = TypeVar("T")

# Estimated bytes a row costs beyond its metric name and labels: ts, value, epoch and seq.
ROW_OVERHEAD = 32
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_UNWRITABLE = (
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_PERM",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
)
_SIDES = (">= ? ORDER BY seq", "<= ? ORDER BY seq DESC")
_SCHEMA = (
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


class OutboxDamaged(Exception):
    """The file failed its integrity check."""


@dataclass(frozen=True)
class Pending:
    epoch: str
    seq_start: int
    seq_end: int
    dropped: int
    samples: list[dict[str, Any]]


class Outbox:
    def __init__(
        self,
        path: Path,
        max_samples: int = 1_000_000,
        max_bytes: int = 128 << 20,
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.clock = clock
        self.conn: sqlite3.Connection | None = None
        self.unwritten = 0  # samples that could not be written, not yet counted in the file
        self._checked = False  # quick_check passed for the file at `path`
        self._salvage_from: Path | None = None  # a damaged file whose rows the next open copies
        self._trouble = Trouble(log)  # the failure being suffered, logged when it changes
        self._attempt(lambda conn: None)

    @property
    def epoch(self) -> str | None:
        """The epoch new samples go to; None while the file cannot be opened."""
        return self._attempt(lambda conn: _current(conn)[1])

    def __len__(self) -> int:
        return self._attempt(lambda conn: _totals(conn)[0]) or 0

    @property
    def bytes(self) -> int:
        """Estimated size of the stored samples (the file adds SQLite's page overhead)."""
        return self._attempt(lambda conn: _totals(conn)[1]) or 0

    def append(self, samples: list[Sample]) -> None:
        """Write samples in one transaction, then drop (and count) the oldest beyond the bounds.
        If the file can't be written the samples are counted as dropped instead."""
        if self._attempt(lambda conn: self._append(conn, samples)) is None:
            self.unwritten += len(samples)

    def pending(self, limit: int) -> Pending | None:
        """The oldest unacknowledged samples (all of one epoch), or an older epoch's unreported
        drops without samples; None when nothing waits."""
        return self._attempt(lambda conn: _pending(conn, limit))

    def ack(self, batch: Pending) -> None:
        """The hub stored `batch`: forget its samples and note the drops it heard of.
        Acknowledging a batch twice, or one of an epoch the file no longer has, changes nothing."""
        self._attempt(lambda conn: _ack(conn, batch))

    def drop(self, batch: Pending) -> None:
        """The hub refused `batch` for good: forget its samples and count them as dropped, so
        the next batch reports them (a batch without samples: its drops count as reported)."""
        self._attempt(lambda conn: _drop(conn, batch))

    def close(self) -> None:
        if self.unwritten:
            log.error(
                "%d samples could not be written to %s and are lost", self.unwritten, self.path
            )
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _append(self, conn: sqlite3.Connection, samples: list[Sample]) -> int:
        skipped = self.unwritten
        with _transaction(conn):
            _insert(conn, samples, skipped)
            self._trim(conn)
            _retire_finished_epochs(conn)
        self.unwritten -= skipped
        return len(samples)

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Drop the oldest samples until every bound holds; walks only the rows it drops."""
        count, size = _totals(conn)
        excess_count = count - self.max_samples
        excess_bytes = size - self.max_bytes
        cutoff = -math.inf if self.max_age_s is None else self.clock() - self.max_age_s
        doomed: dict[int, list[int]] = {}  # epoch id -> [count, bytes, last seq]
        n = b = 0
        rows = conn.execute("SELECT epoch_id, seq, ts, size FROM samples ORDER BY epoch_id, seq")
        try:
            for epoch_id, seq, ts, row_size in rows:
                if n >= excess_count and b >= excess_bytes and ts >= cutoff:
                    break
                n, b = n + 1, b + row_size
                tally = doomed.setdefault(epoch_id, [0, 0, seq])
                tally[0] += 1
                tally[1] += row_size
                tally[2] = seq
        finally:
            rows.close()
        for epoch_id, (gone, gone_bytes, last) in doomed.items():
            conn.execute("DELETE FROM samples WHERE epoch_id = ? AND seq <= ?", [epoch_id, last])
            conn.execute(
                "UPDATE epochs SET count = count - ?, bytes = bytes - ?, dropped = dropped + ? "
                "WHERE id = ?",
                [gone, gone_bytes, gone, epoch_id],
            )

    def _attempt(self, op: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run `op` on the open file. A damaged file is replaced and `op` tried once more; an
        unwritable one gives None (the next call tries again)."""
        for first_try in (True, False):
            try:
                if self.conn is None:
                    self.conn = self._open()
                result = op(self.conn)
            except (sqlite3.Error, OSError, OutboxDamaged) as exc:
                kind = _kind(exc)
                if kind is None:
                    raise
                if kind == "damaged" and first_try and self._set_aside(exc):
                    continue
                self._report(exc)
                return None
            self._report(None)
            return result
        return None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Rows are appended at one end and read at the other: a small page cache will do,
            # and the default 2 MiB would be a good share of the agent's memory.
            conn.execute("PRAGMA cache_size=-512")
            if not self._checked:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise OutboxDamaged(f"quick_check: {verdict}")
                self._checked = True
            with _transaction(conn):
                _migrate_v1(conn)
                for statement in _SCHEMA:
                    conn.execute(statement)
                if self._salvage_from is not None:
                    self._salvage(conn, self._salvage_from)
                elif conn.execute("SELECT 1 FROM epochs").fetchone() is None:
                    _new_epoch(conn)
        except BaseException:
            conn.close()
            raise
        self._salvage_from = None
        return conn

    def _set_aside(self, reason: BaseException) -> bool:
        """Move the damaged file and its WAL out of the way; the next open salvages from them."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{self.path}{suffix}").exists():
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        except OSError as exc:
            log.error(
                "outbox %s is damaged (%s) and cannot be moved aside: %s", self.path, reason, exc
            )
            return False
        log.error("outbox %s is damaged (%s): moved to %s", self.path, reason, aside.name)
        self._salvage_from = aside
        self._checked = False
        return True

    def _salvage(self, conn: sqlite3.Connection, damaged: Path) -> None:
        """Copy what can still be read from `damaged` into the fresh file, old rows keeping their
        (epoch, seq) so the hub stores each sample once; rows lost with the damage are counted
        as dropped of their epoch, and a new epoch takes new samples."""
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
        dropped_before = _dropped(conn)
        # Every SET expression sees the old row, so `count` here is the damaged file's count.
        conn.execute(
            "UPDATE epochs SET dropped = dropped + MAX(0, count - "
            "(SELECT COUNT(*) FROM samples WHERE epoch_id = epochs.id)), "
            "count = (SELECT COUNT(*) FROM samples WHERE epoch_id = epochs.id), "
            "bytes = (SELECT COALESCE(SUM(size), 0) FROM samples WHERE epoch_id = epochs.id)"
        )
        lost = _dropped(conn) - dropped_before
        orphans = "FROM samples WHERE epoch_id NOT IN (SELECT id FROM epochs)"
        rows = conn.execute(f"SELECT ts, metric, value, labels {orphans} ORDER BY epoch_id, seq")
        unknown = [(ts, metric, value, json.loads(labels)) for ts, metric, value, labels in rows]
        conn.execute(f"DELETE {orphans}")
        _new_epoch(conn)
        # Samples whose epoch is unreadable can only travel as new samples of the new epoch.
        _insert(conn, unknown)
        _retire_finished_epochs(conn)
        log.error(
            "outbox %s: salvaged %d samples from %s (%d without a readable epoch, resent as new); "
            "%d lost and counted as dropped",
            self.path,
            salvaged,
            damaged.name,
            len(unknown),
            lost,
        )

    def _report(self, exc: BaseException | None) -> None:
        """Log a failure when it starts or changes, and the recovery when it ends."""
        if exc is None:
            self._trouble.over("outbox %s works again", self.path)
            return
        trouble = f"{type(exc).__name__}: {exc}"
        self._trouble.failing(
            trouble,
            "outbox %s: %s; samples are counted as dropped until it can be written",
            self.path,
            trouble,
        )


def _kind(exc: BaseException) -> str | None:
    """'damaged' (move the file aside), 'unwritable' (count samples as dropped, retry later),
    or None for a bug, which is raised."""
    if isinstance(exc, OutboxDamaged):
        return "damaged"
    if isinstance(exc, OSError):
        return "unwritable"
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(_DAMAGED):
        return "damaged"
    if name.startswith(_UNWRITABLE):
        return "unwritable"
    return None


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (e.g. after SQLITE_FULL).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _current(conn: sqlite3.Connection) -> tuple[int, str, int]:
    """(id, name, next_seq) of the epoch that takes new samples."""
    row = conn.execute("SELECT id, name, next_seq FROM epochs ORDER BY id DESC LIMIT 1").fetchone()
    return int(row[0]), str(row[1]), int(row[2])


def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0) FROM epochs")
    count, size = row.fetchone()
    return int(count), int(size)


def _dropped(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(SUM(dropped), 0) FROM epochs").fetchone()[0])


def _new_epoch(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO epochs VALUES "
        "((SELECT COALESCE(MAX(id), 0) + 1 FROM epochs), ?, 0, 0, 0, 0, 0)",
        [secrets.token_hex(8)],
    )


def _insert(conn: sqlite3.Connection, samples: list[Sample], skipped: int = 0) -> None:
    """Append to the current epoch. `skipped` sequence numbers (samples that could not be
    written earlier) are left out and counted as dropped, so the hub sees a gap it can explain."""
    epoch_id, _, next_seq = _current(conn)
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


def _retire_finished_epochs(conn: sqlite3.Connection) -> None:
    """Forget older epochs that have nothing left to send: no samples, no unreported drops."""
    conn.execute(
        "DELETE FROM epochs WHERE id < ? AND count = 0 AND reported >= dropped",
        [_current(conn)[0]],
    )


def _pending(conn: sqlite3.Connection, limit: int) -> Pending | None:
    current = _current(conn)[0]
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


def _ack(conn: sqlite3.Connection, batch: Pending) -> None:
    _forget(conn, batch, "reported = MAX(reported, :heard)")


def _drop(conn: sqlite3.Connection, batch: Pending) -> None:
    # A batch without samples only carried drops: the hub will not hear of them, so stop telling.
    _forget(
        conn, batch, "dropped = dropped + :gone" + ("" if batch.samples else ", reported = dropped")
    )


def _forget(conn: sqlite3.Connection, batch: Pending, settle: str) -> None:
    """Delete `batch`'s samples (and any older of its epoch) and `settle` the epoch's counts
    (`:gone` the samples deleted, `:heard` the drops the batch reported)."""
    with _transaction(conn):
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
        _retire_finished_epochs(conn)


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Files from before epochs had a table of their own: one epoch in a key-value `meta`."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    conn.execute("ALTER TABLE samples RENAME TO samples_v1")
    for statement in _SCHEMA:
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
