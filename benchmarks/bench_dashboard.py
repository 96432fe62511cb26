"""Dashboard pages over a fleet of 5,000 hosts with 8 GPUs each, against a baseline measured in
the same run: base.html rendered with no data through the same app (the floor for any page).

The store is seeded directly in a temporary DATA_DIR (hosts with the facts a real agent sends,
their agents, latest values for every GPU, an hour of one host's GPU utilization); the real app
(create_app) answers through starlette's TestClient, signed in through /ui/login as a person
would be. Each page: the median of RUNS requests after one warm-up.
Goal: every page < 1 s.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from aiorch.hub.app import create_app
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import TelemetryBatch
from aiorch.hub.services import telemetry, tokens
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from aiorch.hub.ui.render import page
from edge_agent.facts import collect_facts
from edge_agent.gpu import open_gpu_backend

HOSTS = 5000
GPUS = 8
SITES = 50
RUNS = 5
GOAL_S = 1.0
HOST = "host-02500"  # the host whose page (and an hour of utilization) is measured

# Every /ui page, as router.py lists them: name -> path. Add a page here when you add one.
PAGES = {
    "fleet": "/ui/",
    "fleet counts (htmx)": "/ui/fleet/summary",
    "host list, page 1": "/ui/hosts",
    "host list, last page": f"/ui/hosts?page={HOSTS // 50}",
    "host list, one site": "/ui/hosts?site=site07",
    "one host": f"/ui/hosts/{HOST}",
    "one host's series (1 h)": f"/ui/hosts/{HOST}/series?metric=gpu_utilization_percent",
    # No deployments, runs or fleet-wide rollups are seeded: these read near-empty tables.
    "deployments": "/ui/deployments",
    "runs": "/ui/runs",
    "GPU-hours (24 h)": "/ui/gpu-hours?period=24h",
    "audit": "/ui/audit",
    "audit, searched": "/ui/audit?actor=user&target=token",
}
GPU_METRICS = {
    "gpu_utilization_percent": 50.0,
    "gpu_memory_used_bytes": 4e10,
    "gpu_temperature_celsius": 60.0,
    "gpu_power_watts": 400.0,
}


def _facts() -> dict:
    return collect_facts(open_gpu_backend(f"simulated:{GPUS}xH100-80GB"))


def seed(ctx: HubContext) -> None:
    facts = _facts()
    now = ctx.clock()

    def op(db) -> None:  # type: ignore[no-untyped-def]
        for i in range(HOSTS):
            name, site, agent = f"host-{i:05d}", f"site{i % SITES:02d}", f"agent-{i:05d}"
            db.execute(
                "INSERT INTO sites (name, region, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO NOTHING",
                [site, "eu", now],
            )
            db.execute(
                "INSERT INTO agents (id, secret_hash, host_name, site, enrolled_at, last_seen) "
                "VALUES (?, '-', ?, ?, ?, ?)",
                [agent, name, site, now, now - (i % 97) * 10],
            )
            db.execute(
                "INSERT INTO hosts (name, site, role, facts, agent_id, created_at, updated_at) "
                "VALUES (?, ?, 'gpu-server', ?, ?, ?, ?)",
                [name, site, json.dumps({**facts, "hostname": name}), agent, now, now],
            )

    ctx.store.write(op)
    for i in range(HOSTS):
        agent = f"agent-{i:05d}"
        series = [
            {"metric": metric, "labels": {"gpu": str(g), "simulated": "true"}}
            for g in range(GPUS)
            for metric in GPU_METRICS
        ] + [{"metric": "host_cpu_utilization_percent", "labels": {}}]
        values = [v for _ in range(GPUS) for v in GPU_METRICS.values()] + [20.0]
        batch = TelemetryBatch(
            epoch="e",
            seq_start=0,
            seq_end=len(series) - 1,
            series=series,
            samples=[(n, now, n, v) for n, v in enumerate(values)],
        )
        keys = [(agent, s.metric, json.dumps(s.labels, sort_keys=True)) for s in batch.series]
        ctx.latest.update(agent, batch, keys)


def seed_history(ctx: HubContext) -> None:
    """An hour of HOST's GPU utilization at 10 s, with a 5-minute silence in the middle."""
    now = ctx.clock()
    times = [t for t in range(int(now) - 3600, int(now), 10) if not 1500 < now - t < 1800]
    series = [
        {"metric": "gpu_utilization_percent", "labels": {"gpu": str(g), "simulated": "true"}}
        for g in range(GPUS)
    ]
    samples = [(n * GPUS + g, float(t), g, 50.0) for n, t in enumerate(times) for g in range(GPUS)]
    batch = TelemetryBatch(
        epoch="h", seq_start=0, seq_end=len(samples) - 1, series=series, samples=samples
    )
    asyncio.run(telemetry.ingest(ctx, f"agent-{int(HOST[5:]):05d}", batch))


def signed_in(client: TestClient, token: str) -> None:
    form = client.get("/ui/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf, "no CSRF field on the sign-in page"
    answer = client.post(
        "/ui/login", data={"csrf_token": csrf.group(1), "token": token}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def median_s(client: TestClient, path: str) -> float:
    assert client.get(path).status_code == 200, path  # warm-up, and the page works
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, f"{path}: {response.status_code}"
    return statistics.median(times)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        settings = HubSettings(data_dir=Path(tmp))
        ctx = HubContext(store=Store(settings.db_path).open(), settings=settings)
        started = time.perf_counter()
        seed(ctx)
        seed_history(ctx)
        seeded_s = time.perf_counter() - started
        token = tokens.create(ctx, "bench", "bench", global_admin=True)["token"]
        app = create_app(ctx, run_jobs=False)

        def bare(request: Request) -> HTMLResponse:
            return page(request, "base.html", None)

        app.add_api_route("/bench/bare", bare)
        with TestClient(app) as client:
            signed_in(client, token)
            bare_s = median_s(client, "/bench/bare")
            timed = {name: median_s(client, path) for name, path in PAGES.items()}
        ctx.store.close()

    print(f"hosts {HOSTS:,} x {GPUS} GPUs over {SITES} sites (seeded in {seeded_s:.1f} s)")
    print(f"median of {RUNS} requests each, goal < {GOAL_S * 1000:.0f} ms")
    for name, seconds in timed.items():
        print(f"  {name:26}: {seconds * 1000:8.1f} ms   ({seconds / bare_s:6.1f}x bare)")
    print(f"baseline: bare base.html    : {bare_s * 1000:8.1f} ms")
    ok = all(seconds < GOAL_S for seconds in timed.values())
    print("goal met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
