"""Telemetry ingest: batches keyed by (agent, epoch, sequence), stored exactly once.

A batch names its series once (metric plus labels) and refers to them by index, so a
sample on the wire and in the table is four numbers. Each batch is one writer transaction:
new samples, their one-minute rollups and the drop counter land together or not at all.
"""

from __future__ import annotations

import json
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


async def ingest(ctx: HubContext, agent_id: str, batch: TelemetryBatch) -> dict[str, Any]:
    """Store a batch once; a repeat is acknowledged the same way without storing anything."""
    _validate(batch)
    now = ctx.clock()
    keys = [(agent_id, s.metric, json.dumps(s.labels, sort_keys=True)) for s in batch.series]

    def op(db: sqlite_utils.Database) -> int:
        ids = ctx.series.resolve(db, keys)
        (stream,) = ctx.streams.resolve(db, [(agent_id, batch.epoch)])
        # Dedup is per sample, not per batch: a resent batch may have grown since the lost
        # ack (the agent kept appending), and its new samples must still land.
        present = {
            r[0]
            for r in db.conn.execute(
                "SELECT seq FROM samples WHERE stream_id = ? AND seq BETWEEN ? AND ?",
                [stream, batch.seq_start, batch.seq_end],
            )
        }
        rows = [
            (stream, seq, ts, ids[series], value)
            for seq, ts, series, value in batch.samples
            if seq not in present
        ]
        db.conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)
        # Roll up exactly the rows just inserted (the range minus what was already there),
        # in SQL: aggregating in Python cost more than inserting the samples.
        db.conn.execute(
            "INSERT INTO rollups_1m SELECT series_id, CAST(ts / 60 AS INTEGER) AS minute, "
            "COUNT(*), SUM(value), MIN(value), MAX(value) FROM samples "
            "WHERE stream_id = ? AND seq BETWEEN ? AND ? "
            "AND seq NOT IN (SELECT value FROM json_each(?)) "
            "GROUP BY series_id, minute "
            "ON CONFLICT DO UPDATE SET count = count + excluded.count, "
            "sum = sum + excluded.sum, min = MIN(min, excluded.min), max = MAX(max, excluded.max)",
            [stream, batch.seq_start, batch.seq_end, json.dumps(sorted(present))],
        )
        if rows:
            seqs, times = [r[1] for r in rows], [r[2] for r in rows]
            db.conn.execute(
                "INSERT OR IGNORE INTO telemetry_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                [stream, min(seqs), max(seqs), min(times), max(times), len(rows), now],
            )
        db.conn.execute(
            "UPDATE streams SET dropped = MAX(dropped, ?) WHERE id = ?", [batch.dropped, stream]
        )
        return len(rows)

    try:
        stored = await ctx.store.awrite(op)
    except Exception:
        # The transaction rolled back, so ids it created may not exist: forget them.
        ctx.series.forget()
        ctx.streams.forget()
        raise
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


def apply_retention(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: drop raw samples and one-minute rollups past their retention."""
    now = ctx.clock()
    raw_cutoff = now - ctx.settings.raw_retention_s
    minute_cutoff = int((now - ctx.settings.rollup_retention_s) // 60)

    def op(db: sqlite_utils.Database) -> dict[str, int]:
        old = db.conn.execute(
            "SELECT stream_id, seq_start, seq_end FROM telemetry_batches WHERE received_at < ?",
            [raw_cutoff],
        ).fetchall()
        raw = 0
        for stream, start, end in old:
            raw += db.conn.execute(
                "DELETE FROM samples WHERE stream_id = ? AND seq BETWEEN ? AND ?",
                [stream, start, end],
            ).rowcount
        db.conn.execute("DELETE FROM telemetry_batches WHERE received_at < ?", [raw_cutoff])
        rolled = db.conn.execute(
            "DELETE FROM rollups_1m WHERE minute < ?", [minute_cutoff]
        ).rowcount
        return {"raw_samples_deleted": raw, "rollups_deleted": rolled}

    return ctx.store.write(op)
