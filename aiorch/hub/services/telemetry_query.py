"""Series over a time range, raw or as one-minute rollups, with gaps stated, never filled."""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from typing import Any

import sqlite_utils

from aiorch.errors import InvalidInput, NotFound
from aiorch.hub.context import HubContext

GAP_FACTOR = 2.5  # a silence longer than this many expected intervals is a gap


def find_gaps(times: list[float], expected_interval: float) -> list[list[float]]:
    """[start, end] of every silence longer than GAP_FACTOR x the expected interval."""
    limit = GAP_FACTOR * expected_interval
    return [[a, b] for a, b in itertools.pairwise(times) if b - a > limit]


def _expected_interval(times: list[float], fallback: float) -> float:
    deltas = [b - a for a, b in itertools.pairwise(times) if b > a]
    return statistics.median(deltas) if deltas else fallback


def _raw_points(
    db: sqlite_utils.Database, agent_id: str, wanted: set[int], start: float, end: float
) -> dict[int, list[tuple[float, float]]]:
    """Raw samples are found through their batches' time spans (samples carry no time index,
    which keeps ingest fast), then filtered to the wanted series and range."""
    batches = db.execute(
        "SELECT b.stream_id, b.seq_start, b.seq_end FROM telemetry_batches b "
        "JOIN streams s ON s.id = b.stream_id "
        "WHERE s.agent_id = ? AND b.ts_max >= ? AND b.ts_min <= ?",
        [agent_id, start, end],
    ).fetchall()
    points: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for stream, first, last in batches:
        for ts, series_id, value in db.execute(
            "SELECT ts, series_id, value FROM samples WHERE stream_id = ? AND seq BETWEEN ? AND ?",
            [stream, first, last],
        ):
            if series_id in wanted and start <= ts <= end:
                points[series_id].append((ts, value))
    return points


def _rollup_points(
    db: sqlite_utils.Database, series: list[int], start: float, end: float
) -> dict[int, list[tuple[float, float]]]:
    points: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for series_id in series:
        points[series_id] = db.execute(
            "SELECT minute * 60, sum / count FROM rollups_1m "
            "WHERE series_id = ? AND minute BETWEEN ? AND ? ORDER BY minute",
            [series_id, int(start // 60), int(end // 60)],
        ).fetchall()
    return points


def query(
    ctx: HubContext,
    host: str,
    metric: str,
    since_s: float,
    until_s: float = 0.0,
    resolution: str = "auto",
) -> dict[str, Any]:
    if since_s <= until_s:
        raise InvalidInput("since must reach further back than until")
    db = ctx.store.read()
    row = db.execute("SELECT agent_id FROM hosts WHERE name = ?", [host]).fetchone()
    if row is None:
        raise NotFound(f"no host named {host}")
    if row[0] is None:
        raise NotFound(f"host {host} has no agent, so no telemetry")
    now = ctx.clock()
    start, end = now - since_s, now - until_s
    if resolution == "auto":
        resolution = "raw" if since_s <= ctx.settings.raw_retention_s else "1m"
    if resolution not in ("raw", "1m"):
        raise InvalidInput(f"resolution must be raw, 1m or auto, not {resolution!r}")
    series_rows = db.execute(
        "SELECT id, labels FROM series WHERE agent_id = ? AND metric = ? ORDER BY labels",
        [row[0], metric],
    ).fetchall()
    if resolution == "raw":
        points = _raw_points(db, row[0], {sid for sid, _ in series_rows}, start, end)
    else:
        points = _rollup_points(db, [sid for sid, _ in series_rows], start, end)
    fallback = ctx.settings.poll_interval_s if resolution == "raw" else 60.0
    out = []
    for series_id, labels in series_rows:
        found = sorted(points.get(series_id, []))
        times = [p[0] for p in found]
        out.append(
            {
                "labels": json.loads(labels),
                "points": [list(p) for p in found],
                "gaps": find_gaps(times, _expected_interval(times, fallback)),
            }
        )
    return {
        "host": host,
        "metric": metric,
        "from": start,
        "to": end,
        "resolution": resolution,
        "series": out,
    }
