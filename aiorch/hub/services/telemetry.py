"""Telemetry ingest: batches keyed by (agent, epoch, sequence), stored exactly once.

A batch names its series once (metric plus labels) and refers to them by index, so a
sample on the wire and in the table is four numbers. Each batch is one writer transaction:
new samples, their one-minute rollups and the drop counter land together or not at all.
A series with a name or label the hub reserves for its own is dropped alone (the agent would
set the whole batch aside on a refusal), counted, logged once, and named in the reply.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlite_utils

from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import TelemetryBatch
from aiorch.hub.services import exposition, metrics

log = logging.getLogger("aiorch.hub.telemetry")

Row = tuple[int, int, float, int, float]  # stream, seq, ts, series, value

# (agent, metric) pairs already logged as refused; bounded so that a sender of ever new
# names cannot grow the hub's memory.
MAX_LOGGED_REFUSALS = 4096
_logged_refusals: set[tuple[str, str]] = set()


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


def _runs(rows: list[Row]) -> list[tuple[int, int, float, float, int]]:
    """The new rows as runs of consecutive seqs: (first, last, ts_min, ts_max, count).

    Each run is later rolled up by its seq range, so a run must hold new rows only."""
    if not rows:
        return []
    seqs = [r[1] for r in rows]
    if max(seqs) - min(seqs) + 1 == len(rows):  # the usual case: one unbroken range
        times = [r[2] for r in rows]
        return [(min(seqs), max(seqs), min(times), max(times), len(rows))]
    runs: list[list[Row]] = []
    for row in sorted(rows, key=lambda r: r[1]):
        if runs and row[1] == runs[-1][-1][1] + 1:
            runs[-1].append(row)
        else:
            runs.append([row])
    return [
        (run[0][1], run[-1][1], min(r[2] for r in run), max(r[2] for r in run), len(run))
        for run in runs
    ]


def _refused(agent_id: str, batch: TelemetryBatch) -> dict[int, str]:
    """Series index -> why the hub will not take it; each counted, and logged once."""
    refused: dict[int, str] = {}
    for index, series in enumerate(batch.series):
        reason = exposition.refusal(series.metric, series.labels)
        if reason is None:
            continue
        refused[index] = reason
        metrics.SERIES_REFUSED.labels(reason).inc()
        key = (agent_id, series.metric)
        if key not in _logged_refusals and len(_logged_refusals) < MAX_LOGGED_REFUSALS:
            _logged_refusals.add(key)
            log.warning("agent %s sent series %s (%s); dropped (logged once)", *key, reason)
    return refused


async def ingest(ctx: HubContext, agent_id: str, batch: TelemetryBatch) -> dict[str, Any]:
    """Store a batch once; a repeat is acknowledged the same way without storing anything."""
    _validate(batch)
    now = ctx.clock()
    refused = _refused(agent_id, batch)
    if refused:
        kept = [s for s in batch.samples if s[2] not in refused]
        batch = batch.model_copy(update={"samples": kept})
    keys = [(agent_id, s.metric, json.dumps(s.labels, sort_keys=True)) for s in batch.series]
    accepted = [i for i in range(len(keys)) if i not in refused]

    def op(db: sqlite_utils.Database) -> int:
        ids = dict(zip(accepted, ctx.series.resolve(db, [keys[i] for i in accepted]), strict=True))
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
        db.conn.executemany(
            "INSERT INTO telemetry_batches VALUES (?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            [(stream, *run, now) for run in _runs(rows)],
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
    reply: dict[str, Any] = {
        "epoch": batch.epoch,
        "acked_through": batch.seq_end,
        "stored": stored,
        "duplicate": stored == 0 and bool(batch.samples),
    }
    if refused:  # only then, so the reply keeps its shape for every well-behaved agent
        reply["refused"] = [
            {"metric": batch.series[i].metric, "reason": reason} for i, reason in refused.items()
        ]
    return reply


def downsample(ctx: HubContext, max_runs: int = 2000) -> int:
    """Scheduled job: fold newly stored runs of samples into the one-minute rollups.

    Done here rather than at ingest, so the ingest path only appends; each run is rolled
    exactly once (its `rolled` flag changes in the same transaction)."""

    def op(db: sqlite_utils.Database) -> int:
        runs = db.conn.execute(
            "SELECT stream_id, seq_start, seq_end FROM telemetry_batches WHERE rolled = 0 LIMIT ?",
            [max_runs],
        ).fetchall()
        for stream, first, last in runs:
            db.conn.execute(
                "INSERT INTO rollups_1m SELECT series_id, CAST(ts / 60 AS INTEGER) AS minute, "
                "COUNT(*), SUM(value), MIN(value), MAX(value) FROM samples "
                "WHERE stream_id = ? AND seq BETWEEN ? AND ? GROUP BY series_id, minute "
                "ON CONFLICT DO UPDATE SET count = count + excluded.count, "
                "sum = sum + excluded.sum, min = MIN(min, excluded.min), "
                "max = MAX(max, excluded.max)",
                [stream, first, last],
            )
            db.conn.execute(
                "UPDATE telemetry_batches SET rolled = 1 WHERE stream_id = ? AND seq_start = ?",
                [stream, first],
            )
        return len(runs)

    return ctx.store.write(op)


def apply_retention(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: drop raw samples (once rolled up) and rollups past their retention."""
    now = ctx.clock()
    raw_cutoff = now - ctx.settings.raw_retention_s
    minute_cutoff = int((now - ctx.settings.rollup_retention_s) // 60)

    def op(db: sqlite_utils.Database) -> dict[str, int]:
        old = db.conn.execute(
            "SELECT stream_id, seq_start, seq_end FROM telemetry_batches "
            "WHERE received_at < ? AND rolled = 1",
            [raw_cutoff],
        ).fetchall()
        raw = 0
        for stream, start, end in old:
            raw += db.conn.execute(
                "DELETE FROM samples WHERE stream_id = ? AND seq BETWEEN ? AND ?",
                [stream, start, end],
            ).rowcount
            db.conn.execute(
                "DELETE FROM telemetry_batches WHERE stream_id = ? AND seq_start = ?",
                [stream, start],
            )
        rolled = db.conn.execute(
            "DELETE FROM rollups_1m WHERE minute < ?", [minute_cutoff]
        ).rowcount
        return {"raw_samples_deleted": raw, "rollups_deleted": rolled}

    return ctx.store.write(op)
