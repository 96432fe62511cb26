"""Telemetry ingest: batches keyed by (agent, epoch, sequence), stored exactly once."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import TelemetryBatch


def _validate(batch: TelemetryBatch) -> None:
    if batch.seq_end < batch.seq_start:
        raise InvalidInput(f"seq_end {batch.seq_end} is before seq_start {batch.seq_start}")
    seqs = [s.seq for s in batch.samples]
    outside = [s for s in seqs if not batch.seq_start <= s <= batch.seq_end]
    if outside:
        raise InvalidInput(
            f"sample seq {outside[0]} is outside the batch range {batch.seq_start}..{batch.seq_end}"
        )
    if len(set(seqs)) != len(seqs):
        raise InvalidInput("a batch repeats a sample sequence number")


async def ingest(ctx: HubContext, agent_id: str, batch: TelemetryBatch) -> dict[str, Any]:
    """Store a batch once; a repeat is acknowledged the same way without storing anything."""
    _validate(batch)
    now = ctx.clock()
    rows = [
        (
            agent_id,
            batch.epoch,
            s.seq,
            s.ts,
            s.metric,
            s.value,
            json.dumps(s.labels, sort_keys=True),
        )
        for s in batch.samples
    ]

    def op(db: sqlite_utils.Database) -> int:
        # Dedup is per sample, not per batch: a resent batch may have grown since the
        # lost ack (the agent kept appending), and its new samples must still land.
        db.conn.execute(
            "INSERT OR IGNORE INTO telemetry_batches "
            "(agent_id, epoch, seq_start, seq_end, samples, dropped, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [agent_id, batch.epoch, batch.seq_start, batch.seq_end, len(rows), batch.dropped, now],
        )
        before = db.conn.total_changes
        db.conn.executemany(
            "INSERT OR IGNORE INTO samples (agent_id, epoch, seq, ts, metric, value, labels) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return db.conn.total_changes - before

    stored = await ctx.store.awrite(op)
    return {
        "epoch": batch.epoch,
        "acked_through": batch.seq_end,
        "stored": stored,
        "duplicate": stored == 0 and bool(rows),
    }


def sample_count(ctx: HubContext, agent_id: str) -> int:
    row = (
        ctx.store.read()
        .execute("SELECT COUNT(*) FROM samples WHERE agent_id = ?", [agent_id])
        .fetchone()
    )
    return int(row[0])
