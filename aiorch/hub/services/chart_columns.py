"""A series query's answer as uPlot draws it: one [times, values] table per series, with a
null inside every gap, so the chart breaks there instead of joining the points across it
(uPlot draws a null as a break when `spanGaps` is false; charts.js aligns the tables with
`uPlot.join`, which keeps the nulls)."""

from __future__ import annotations

import itertools
from typing import Any

from edge_agent.contract.telemetry import SIMULATED_LABEL

# Labels that say which series it is without naming it for people.
_UNSHOWN = frozenset({"uuid", "product", SIMULATED_LABEL})


def series_label(labels: dict[str, str]) -> str:
    """`gpu=0 (simulated)`, `interface=eth0`: the labels that tell series apart."""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in _UNSHOWN)
    simulated = labels.get(SIMULATED_LABEL) == "true"
    return f"{shown or 'value'}{' (simulated)' if simulated else ''}"


def per_second(points: list[list[float]], gaps: list[list[float]]) -> list[list[float]]:
    """A counter's points as rates between neighbours, at the later one; not across a gap
    (nothing is known there) nor across a reset (the counter went down)."""
    silent = {(a, b) for a, b in gaps}
    return [
        [t2, (v2 - v1) / (t2 - t1)]
        for (t1, v1), (t2, v2) in itertools.pairwise(points)
        if t2 > t1 and v2 >= v1 and (t1, t2) not in silent
    ]


def with_gaps(points: list[list[float]], gaps: list[list[float]]) -> list[list[Any]]:
    """[times, values] with a null at the middle of each gap."""
    marks = sorted((a + b) / 2 for a, b in gaps)
    times: list[float] = []
    values: list[float | None] = []
    for ts, value in points:
        while marks and marks[0] < ts:
            times.append(marks.pop(0))
            values.append(None)
        times.append(ts)
        values.append(value)
    return [times, values]


def columns(answer: dict[str, Any], rate: bool = False) -> dict[str, Any]:
    """`telemetry_query.query`'s answer as uPlot tables; `rate` turns counters into per-second
    rates. `points` counts the real points (the nulls are not points)."""
    tables, names, points = [], [], 0
    for series in answer["series"]:
        found = series["points"]
        if rate:
            found = per_second(found, series["gaps"])
        tables.append(with_gaps(found, series["gaps"]))
        names.append(
            {
                "label": series_label(series["labels"]),
                "simulated": series["labels"].get(SIMULATED_LABEL) == "true",
                "gaps": len(series["gaps"]),
            }
        )
        points += len(found)
    return {
        "host": answer["host"],
        "metric": answer["metric"],
        "from": answer["from"],
        "to": answer["to"],
        "resolution": answer["resolution"],
        "rate": rate,
        "series": names,
        "tables": tables,
        "points": points,
    }
