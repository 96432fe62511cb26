"""The outbox itself: bounds, and what it does with unwritable and damaged files."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from edge_agent.outbox import salvage, sql
from edge_agent.outbox.sql import Pending, Sample
from edge_agent.trouble import Trouble

log = logging.getLogger("aiorch.agent.outbox")

T = TypeVar("T")

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


class OutboxDamaged(Exception):
    """The file failed its integrity check."""


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
        return self._attempt(lambda conn: sql.current_epoch(conn)[1])

    def __len__(self) -> int:
        return self._attempt(lambda conn: sql.totals(conn)[0]) or 0

    @property
    def bytes(self) -> int:
        """Estimated size of the stored samples (the file adds SQLite's page overhead)."""
        return self._attempt(lambda conn: sql.totals(conn)[1]) or 0

    def append(self, samples: list[Sample]) -> None:
        """Write samples in one transaction, then drop (and count) the oldest beyond the bounds.
        If the file can't be written the samples are counted as dropped instead."""
        if self._attempt(lambda conn: self._append(conn, samples)) is None:
            self.unwritten += len(samples)

    def pending(self, limit: int) -> Pending | None:
        """The oldest unacknowledged samples (all of one epoch), or an older epoch's unreported
        drops without samples; None when nothing waits."""
        return self._attempt(lambda conn: sql.pending(conn, limit))

    def ack(self, batch: Pending) -> None:
        """The hub stored `batch`: forget its samples and note the drops it heard of.
        Acknowledging a batch twice, or one of an epoch the file no longer has, changes nothing."""
        self._attempt(lambda conn: sql.ack(conn, batch))

    def drop(self, batch: Pending) -> None:
        """The hub refused `batch` for good: forget its samples and count them as dropped, so
        the next batch reports them (a batch without samples: its drops count as reported)."""
        self._attempt(lambda conn: sql.drop(conn, batch))

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
        with sql.transaction(conn):
            sql.insert(conn, samples, skipped)
            self._trim(conn)
            sql.retire_finished_epochs(conn)
        self.unwritten -= skipped
        return len(samples)

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Drop the oldest samples until every bound holds; walks only the rows it drops."""
        count, size = sql.totals(conn)
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
            with sql.transaction(conn):
                sql.migrate_v1(conn)
                for statement in sql.SCHEMA:
                    conn.execute(statement)
                if self._salvage_from is not None:
                    self._salvage(conn, self._salvage_from)
                elif conn.execute("SELECT 1 FROM epochs").fetchone() is None:
                    sql.new_epoch(conn)
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
        salvaged, unknown, lost = salvage.salvage(conn, damaged)
        log.error(
            "outbox %s: salvaged %d samples from %s (%d without a readable epoch, resent as new); "
            "%d lost and counted as dropped",
            self.path,
            salvaged,
            damaged.name,
            unknown,
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
