"""`aiorch telemetry`: series over time and GPU-hours accounting."""

from __future__ import annotations

import time

import typer

from aiorch.cli.output import Output, console, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.cli.tokens import parse_duration

app = typer.Typer(help="Fleet telemetry: series over time, GPU-hours.", no_args_is_help=True)


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@app.command("query")
def query(
    ctx: typer.Context,
    host: str,
    metric: str = typer.Option(..., help="Metric name, e.g. gpu_utilization_percent."),
    since: str = typer.Option("1h", help="How far back, e.g. 15m, 1h, 7d."),
    resolution: str = typer.Option("auto", help="raw, 1m or auto (raw within retention)."),
    output: Output = OutputOpt,
) -> None:
    """Show METRIC on HOST over time; gaps from disconnection are listed, never filled in."""
    data = (
        state(ctx)
        .client()
        .get(
            "/telemetry/series",
            host=host,
            metric=metric,
            since_s=parse_duration(since),
            resolution=resolution,
        )
    )
    if output is Output.json:
        emit(data, output)
        return
    if not data["series"]:
        console.print(f"no {metric} series on {host}")
    for series in data["series"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(series["labels"].items()))
        console.print(
            f"[bold]{metric}{{{labels}}}[/] {len(series['points'])} points ({data['resolution']})"
        )
        for ts, value in series["points"][-20:]:
            console.print(f"  {_clock(ts)}  {value:g}")
        for start, end in series["gaps"]:
            console.print(f"  [yellow]gap[/] {_clock(start)} .. {_clock(end)} ({end - start:.0f}s)")


@app.command("gpu-hours")
def gpu_hours(
    ctx: typer.Context,
    by: str = typer.Option("site", help="site, project, deployment or host."),
    since: str = typer.Option("24h", help="How far back, e.g. 24h, 30d."),
    output: Output = OutputOpt,
) -> None:
    """GPU-hours available and used, grouped; simulated GPUs are reported separately."""
    rows = state(ctx).client().get("/accounting/gpu-hours", by=by, since_s=parse_duration(since))
    emit(rows, output, [by, "simulated", "gpu_hours_available", "gpu_hours_used"])
