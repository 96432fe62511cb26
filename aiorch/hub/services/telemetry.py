"""Telemetry ingest: batches keyed by (agent, epoch, sequence), stored exactly once.

A batch names its series once (metric plus labels) and refers to them by index, so a
sample on the wire and in the table is four numbers. Each batch is one writer transaction:
new samples, their one-minute rollups and the drop counter land together or not at all.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import sqlite_utils

from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import TelemetryBatch
from aiorch.hub.services import metrics


def _validate(batch: TelemetryBatch) -> None:
    if batch.seq_end < batch.seq_start:
        raise InvalidInput(f"seq_end {batch.seq_end} is before seq_start {batch.seq_start}")
    seen: set[int] = set()
    for seq, _, series, _ in batch.samples:
        if not batch.seq_start <= seq <= batch.seq_end:
            raise InvalidInput(
                f"sample seq {seq} is outside the batch range {batch.seq_start}..{batch.seq_end}"
            )
        if not 0 <= series < len(batch.series):
            raise InvalidInput(
                f"sample seq {seq} names series {series}; the batch has {len(batch.series)}"
            )
        if seq in seen:
            raise InvalidInput(f"a batch repeats sample sequence number {seq}")
        seen.add(seq)


def _rollups(rows: list[tuple[Any, ...]]) -> list[tuple[int, int, int, float, float, float]]:
    """(series, minute) aggregates of new sample rows (agent, epoch, seq, ts, series, value)."""
    acc: dict[tuple[int, int], list[float]] = defaultdict(
        lambda: [0, 0.0, float("inf"), -float("inf")]
    )
    for _, _, _, ts, series, value in rows:
        a = acc[(series, int(ts // 60))]
        a[0] += 1
        a[1] += value
        a[2] = min(a[2], value)
        a[3] = max(a[3], value)
    return [(s, m, int(a[0]), a[1], a[2], a[3]) for (s, m), a in acc.items()]


async def ingest(ctx: HubContext, agent_id: str, batch: TelemetryBatch) -> dict[str, Any]:
    """Store a batch once; a repeat is acknowledged the same way without storing anything."""
    _validate(batch)
    now = ctx.clock()
    keys = [(agent_id, s.metric, json.dumps(s.labels, sort_keys=True)) for s in batch.series]

    def op(db: sqlite_utils.Database) -> int:
        ids = ctx.series.resolve(db, keys)
        # Dedup is per sample, not per batch: a resent batch may have grown since the lost
        # ack (the agent kept appending), and its new samples must still land.
        present = {
            r[0]
            for r in db.conn.execute(
                "SELECT seq FROM samples WHERE agent_id = ? AND epoch = ? AND seq BETWEEN ? AND ?",
                [agent_id, batch.epoch, batch.seq_start, batch.seq_end],
            )
        }
        rows = [
            (agent_id, batch.epoch, seq, ts, ids[series], value)
            for seq, ts, series, value in batch.samples
            if seq not in present
        ]
        db.conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.conn.executemany(
            "INSERT INTO rollups_1m VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "count = count + excluded.count, sum = sum + excluded.sum, "
            "min = MIN(min, excluded.min), max = MAX(max, excluded.max)",
            _rollups(rows),
        )
        db.conn.execute(
            "INSERT OR IGNORE INTO telemetry_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            [agent_id, batch.epoch, batch.seq_start, batch.seq_end, len(rows), batch.dropped, now],
        )
        if batch.dropped:
            db.conn.execute(
                "INSERT INTO telemetry_drops VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
                "dropped = MAX(dropped, excluded.dropped)",
                [agent_id, batch.epoch, batch.dropped],
            )
        return len(rows)

    stored = await ctx.store.awrite(op)
    metrics.SAMPLES_STORED.inc(stored)
    metrics.SAMPLES_DUPLICATE.inc(len(batch.samples) - stored)
    if stored:
        ctx.latest.update(agent_id, batch, keys)
    return {
        "epoch": batch.epoch,
        "acked_through": batch.seq_end,
        "stored": stored,
        "duplicate": stored == 0 and bool(batch.samples),
    }


def sample_count(ctx: HubContext, agent_id: str) -> int:
    row = (
        ctx.store.read()
        .execute("SELECT COUNT(*) FROM samples WHERE agent_id = ?", [agent_id])
        .fetchone()
    )
    return int(row[0])


def apply_retention(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: drop raw samples and one-minute rollups past their retention."""
    now = ctx.clock()
    raw_cutoff = now - ctx.settings.raw_retention_s
    minute_cutoff = int((now - ctx.settings.rollup_retention_s) // 60)

    def op(db: sqlite_utils.Database) -> dict[str, int]:
        old = db.conn.execute(
            "SELECT agent_id, epoch, seq_start, seq_end FROM telemetry_batches "
            "WHERE received_at < ?",
            [raw_cutoff],
        ).fetchall()
        raw = 0
        for agent_id, epoch, start, end in old:
            raw += db.conn.execute(
                "DELETE FROM samples WHERE agent_id = ? AND epoch = ? AND seq BETWEEN ? AND ?",
                [agent_id, epoch, start, end],
            ).rowcount
        db.conn.execute("DELETE FROM telemetry_batches WHERE received_at < ?", [raw_cutoff])
        rolled = db.conn.execute(
            "DELETE FROM rollups_1m WHERE minute < ?", [minute_cutoff]
        ).rowcount
        return {"raw_samples_deleted": raw, "rollups_deleted": rolled}

    return ctx.store.write(op)
