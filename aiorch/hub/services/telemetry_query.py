"""Series over a time range, raw or as one-minute rollups, with gaps stated, never filled."""

from __future__ import annotations

import itertools
import json
import statistics
from typing import Any

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
    out = []
    for series_id, labels in series_rows:
        if resolution == "raw":
            points = db.execute(
                "SELECT ts, value FROM samples WHERE series_id = ? AND ts BETWEEN ? AND ? "
                "ORDER BY ts",
                [series_id, start, end],
            ).fetchall()
        else:
            points = db.execute(
                "SELECT minute * 60, sum / count FROM rollups_1m "
                "WHERE series_id = ? AND minute BETWEEN ? AND ? ORDER BY minute",
                [series_id, int(start // 60), int(end // 60)],
            ).fetchall()
        times = [p[0] for p in points]
        fallback = ctx.settings.poll_interval_s if resolution == "raw" else 60.0
        out.append(
            {
                "labels": json.loads(labels),
                "points": [list(p) for p in points],
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
