"""Hub-side telemetry: exactly-once ingest, rollups, gaps, retention, accounting, /metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from aiorch.hub.context import HubContext
from aiorch.hub.schemas import TelemetryBatch
from aiorch.hub.services import accounting, enrollment, telemetry, telemetry_query
from tests.fixtures_hub import HubProcess, enroll_agent, fresh_csr, make_enroll_token

T0 = 1_800_000_000.0  # a minute boundary


@pytest.fixture
def ctx(make_context) -> HubContext:
    context = make_context(raw_retention_s=600, rollup_retention_s=7200)
    context.clock.now = T0 + 3600
    token = enrollment.create_token(context, "edge1", 86400, 1, "user:test")["token"]
    context.agent_id = enrollment.enroll(context, token, fresh_csr(), {"hostname": "gpu-1"}, "1")[
        "agent_id"
    ]
    return context


def _gpu_batch(
    points: list[tuple[int, float, float]], epoch: str = "e1", **extra
) -> TelemetryBatch:
    """points: (seq, ts, utilization) for one simulated GPU series."""
    labels = {"gpu": "0", "simulated": "true", "project": "vision"}
    return TelemetryBatch(
        epoch=epoch,
        seq_start=min(p[0] for p in points),
        seq_end=max(p[0] for p in points),
        series=[{"metric": "gpu_utilization_percent", "labels": labels}],
        samples=[(seq, ts, 0, value) for seq, ts, value in points],
        **extra,
    )


def _ingest(ctx: HubContext, batch: TelemetryBatch) -> dict:
    return asyncio.run(telemetry.ingest(ctx, ctx.agent_id, batch))  # type: ignore[attr-defined]


def test_resent_batch_stores_nothing_and_rollups_do_not_double(ctx: HubContext):
    batch = _gpu_batch([(i, T0 + 10 * i, 50.0) for i in range(6)])
    assert _ingest(ctx, batch)["stored"] == 6
    assert _ingest(ctx, batch) == {
        "epoch": "e1",
        "acked_through": 5,
        "stored": 0,
        "duplicate": True,
    }
    assert telemetry.downsample(ctx) == 1
    assert telemetry.downsample(ctx) == 0, "each run is rolled up once"
    rollup = ctx.store.read().execute("SELECT count, sum, min, max FROM rollups_1m").fetchall()
    assert rollup == [(6, 300.0, 50.0, 50.0)]


def test_query_lists_gaps_and_never_interpolates(ctx: HubContext):
    ctx.clock.now = T0 + 300  # type: ignore[attr-defined]
    before = [(i, T0 + 10 * i, 10.0) for i in range(5)]
    after = [(5 + i, T0 + 200 + 10 * i, 90.0) for i in range(5)]
    _ingest(ctx, _gpu_batch(before + after))
    result = telemetry_query.query(ctx, "gpu-1", "gpu_utilization_percent", since_s=300)
    (series,) = result["series"]
    assert result["resolution"] == "raw"
    assert len(series["points"]) == 10, "only the stored points, nothing filled in"
    assert series["gaps"] == [[T0 + 40, T0 + 200]]


def test_resend_with_new_samples_around_old_ones_rolls_up_only_the_new(ctx: HubContext):
    _ingest(ctx, _gpu_batch([(i, T0 + i, 1.0) for i in (3, 4)]))
    _ingest(ctx, _gpu_batch([(i, T0 + i, 1.0) for i in range(8)]))
    assert telemetry.downsample(ctx) == 3, "runs 3-4, then 0-2 and 5-7"
    count = ctx.store.read().execute("SELECT SUM(count) FROM rollups_1m").fetchone()[0]
    assert count == 8


def test_dropped_counter_is_cumulative_per_epoch(ctx: HubContext):
    _ingest(ctx, _gpu_batch([(10, T0, 1.0)], dropped=7))
    _ingest(ctx, _gpu_batch([(10, T0, 1.0)], dropped=7))
    _ingest(ctx, _gpu_batch([(11, T0 + 1, 1.0)], dropped=9))
    rows = ctx.store.read().execute("SELECT epoch, dropped FROM streams").fetchall()
    assert rows == [("e1", 9)]


def test_retention_drops_old_raw_samples_then_old_rollups(ctx: HubContext):
    ctx.clock.now = T0  # type: ignore[attr-defined]
    _ingest(ctx, _gpu_batch([(0, T0, 5.0)]))
    assert telemetry.apply_retention(ctx)["raw_samples_deleted"] == 0, "not before rollup"
    telemetry.downsample(ctx)
    ctx.clock.now = T0 + 601  # type: ignore[attr-defined]
    assert telemetry.apply_retention(ctx) == {"raw_samples_deleted": 1, "rollups_deleted": 0}
    hourly = telemetry_query.query(ctx, "gpu-1", "gpu_utilization_percent", since_s=3600)
    assert hourly["resolution"] == "1m" and hourly["series"][0]["points"] == [[T0, 5.0]]
    ctx.clock.now = T0 + 7300  # type: ignore[attr-defined]
    assert telemetry.apply_retention(ctx)["rollups_deleted"] == 1


def test_gpu_hours_by_project_and_site(ctx: HubContext):
    ctx.clock.now = T0 + 3600  # type: ignore[attr-defined]
    minutes = [(i, T0 + 60 * i, 50.0) for i in range(60)]  # one GPU, one hour, half busy
    _ingest(ctx, _gpu_batch(minutes))
    telemetry.downsample(ctx)
    by_project = accounting.gpu_hours(ctx, "project", since_s=7200)
    assert by_project == [
        {"project": "vision", "simulated": True, "gpu_hours_available": 1.0, "gpu_hours_used": 0.5}
    ]
    assert accounting.gpu_hours(ctx, "site", since_s=7200)[0]["site"] == "edge1"


def test_unknown_host_query_is_404(ctx: HubContext):
    from aiorch.errors import NotFound

    with pytest.raises(NotFound, match="no host named nope"):
        telemetry_query.query(ctx, "nope", "x", since_s=60)


def test_metrics_endpoint_shows_fleet_readings_with_host_and_site(
    shared_hub: HubProcess, admin: httpx.Client
):
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin, "dc1"), "metrics-a")
    batch = _gpu_batch([(0, T0, 77.0)]).model_dump()
    with shared_hub.client(enrolled["credential"]) as agent:
        assert (
            agent.post(f"/agents/{enrolled['agent_id']}/telemetry", json=batch).status_code == 200
        )
    with shared_hub.client(shared_hub.admin_token, root=True) as scrape:
        text = scrape.get("/metrics").text
    line = next(x for x in text.splitlines() if 'host="metrics-a"' in x and "gpu_utilization" in x)
    assert line.startswith("aiorch_gpu_utilization_percent{") and 'site="dc1"' in line
    assert 'simulated="true"' in line and line.endswith(" 77.0"), "no exported timestamp"
    assert 'aiorch_agents{status="online"}' in text
    assert "aiorch_telemetry_samples_stored_total" in text


def test_cli_query_prints_points_and_gaps(shared_hub: HubProcess, admin: httpx.Client):
    import time

    enrolled = enroll_agent(shared_hub, make_enroll_token(admin, "dc1"), "query-a")
    now = time.time()
    points = [(i, now - 300 + 10 * i, 1.0) for i in range(3)] + [(3, now - 60, 2.0)]
    with shared_hub.client(enrolled["credential"]) as agent:
        agent.post(
            f"/agents/{enrolled['agent_id']}/telemetry", json=_gpu_batch(points).model_dump()
        )
    data = shared_hub.cli_json(
        "telemetry", "query", "query-a", "--metric", "gpu_utilization_percent", "--since", "10m"
    )
    assert len(data["series"][0]["points"]) == 4 and len(data["series"][0]["gaps"]) == 1
    text = shared_hub.cli(
        "telemetry", "query", "query-a", "--metric", "gpu_utilization_percent"
    ).stdout
    assert "gap" in text
