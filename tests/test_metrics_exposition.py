"""`/metrics` as Prometheus reads it: typed `aiorch_` series that pass promtool with the real
collectors reporting, DCGM names on `/metrics/dcgm`, offline hosts gone stale, and series an
agent may not send dropped one by one."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiorch.hub.context import HubContext
from aiorch.hub.schemas import TelemetryBatch
from aiorch.hub.services import enrollment, exposition, metrics, telemetry
from aiorch.hub.services.heartbeats import Heartbeat
from aiorch.hub.services.latest import PerMinute
from edge_agent.client import wire_batch
from edge_agent.collectors import default_collectors
from edge_agent.collectors.workloads import workload_samples
from edge_agent.contract.telemetry import METRICS
from edge_agent.gpu import SimulatedBackend
from tests.fixtures_hub import fresh_csr
from tests.tiers import missing_lab

MIB = 1024 * 1024


def promtool() -> str:
    """Debian's `prometheus` package (SYSTEM_PACKAGES): missing under CI fails, never skips."""
    return shutil.which("promtool") or missing_lab("promtool (Debian package prometheus)")


def _enroll(ctx: HubContext, *hosts: str) -> list[str]:
    token = enrollment.create_token(ctx, "dc1", 3600, 10, "user:t")["token"]
    return [
        enrollment.enroll(ctx, token, fresh_csr(), {"hostname": h}, "1")["agent_id"] for h in hosts
    ]


def _beat(ctx: HubContext, agent_id: str) -> None:
    ctx.heartbeats.record(agent_id, Heartbeat(ctx.clock(), "1", 1.0, "h", 0))


def _upload(ctx: HubContext, agent_id: str, samples: list, epoch: str = "e1") -> dict[str, Any]:
    """Samples as collectors return them, sent the way the agent sends them."""
    rows = [
        {"seq": i, "ts": ts, "metric": m, "value": v, "labels": labels}
        for i, (ts, m, v, labels) in enumerate(samples)
    ]
    pending = {"epoch": epoch, "seq_start": 0, "seq_end": len(rows) - 1, "dropped": 0}
    batch = TelemetryBatch.model_validate(wire_batch({**pending, "samples": rows}))
    return asyncio.run(telemetry.ingest(ctx, agent_id, batch))


def _real_samples(now: float) -> list:
    """What a real agent sends in a round: every collector, a workload and an XID event."""
    collectors = default_collectors(SimulatedBackend("4xA100-40GB"))
    samples = collectors.collect(now)
    samples += workload_samples(
        now, [{"name": "web", "state": "running", "restarts": 2, "health": "healthy"}]
    )
    gpu0 = next(s[3] for s in samples if s[1] == "gpu_utilization_percent")
    samples.append((now - 5, "gpu_xid_errors_total", 1.0, {**gpu0, "xid": "31"}))
    samples.append((now - 1, "gpu_xid_errors_total", 1.0, {**gpu0, "xid": "79"}))
    return samples


@pytest.fixture
def fleet(make_context) -> tuple[HubContext, list[str]]:
    ctx = make_context()
    ctx.clock.now = time.time()  # the GPU backend stamps its readings with the real time
    ids = _enroll(ctx, "gpu-a", "gpu-b")
    for agent_id in ids:
        _beat(ctx, agent_id)
        _upload(ctx, agent_id, _real_samples(ctx.clock()))
    return ctx, ids


def _families(text: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def test_metrics_pass_promtool_with_real_collectors_reporting(fleet):
    ctx, _ = fleet
    text = metrics.render(ctx)
    check = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    families = _families(text)
    # Counters typed as counters (the parser names them without `_total`), gauges as gauges.
    for name in ("net_receive_bytes", "host_disk_read_bytes", "workload_restarts"):
        assert families[f"aiorch_{name}"].type == "counter"
    cpu = families["aiorch_host_cpu_utilization_percent"]
    assert cpu.type == "gauge" and {s.labels["host"] for s in cpu.samples} == {"gpu-a", "gpu-b"}
    assert all(s.labels["site"] == "dc1" for s in cpu.samples)
    assert all(s.timestamp is None for f in families.values() for s in f.samples), (
        "latest values carry no timestamp: Prometheus stamps them at scrape time"
    )
    assert not any(name.startswith(("host_", "net_", "gpu_", "agent_")) for name in families)


def test_every_series_the_agent_sends_is_in_the_contract_table():
    sent = {metric for _, metric, _, _ in _real_samples(1_800_000_000.0)}
    sent.discard("gpu_field_read_failed")  # only when a read fails; the table has it
    assert sent <= set(METRICS), sent - set(METRICS)


def test_gpu_series_also_carry_dcgm_names_units_and_labels(fleet):
    ctx, _ = fleet
    lines = metrics.render_dcgm(ctx).decode().splitlines()

    def sample(name: str, **labels: str) -> tuple[dict[str, str], float]:
        for line in lines:
            match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
            if match:
                found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
                if labels.items() <= found.items():
                    return found, float(match.group(2))
        raise AssertionError(f"no {name} {labels} in /metrics/dcgm")

    labels, util = sample("DCGM_FI_DEV_GPU_UTIL", Hostname="gpu-a", gpu="0")
    assert labels["instance"] == "gpu-a" and labels["modelName"].startswith("NVIDIA A100")
    assert labels["UUID"] and "uuid" not in labels and 0 <= util <= 100
    _, fb = sample("DCGM_FI_DEV_FB_USED", UUID=labels["UUID"])
    assert fb > 0, "framebuffer in MiB"  # the simulator's bytes differ per round: no equality
    _, clock = sample("DCGM_FI_DEV_SM_CLOCK", UUID=labels["UUID"])
    assert 100 < clock < 5000, "SM clock in MHz"
    _, watts = sample("DCGM_FI_DEV_POWER_USAGE", UUID=labels["UUID"])
    assert 0 < watts < 2000, "power in W"
    sample("DCGM_FI_DEV_GPU_TEMP", UUID=labels["UUID"])
    _, xid = sample("DCGM_FI_DEV_XID_ERRORS", UUID=labels["UUID"], Hostname="gpu-a")
    assert xid == 79, "DCGM's XID field is the newest XID, not a count"
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" in lines


def test_offline_host_goes_stale_and_keeps_its_last_report_time(fleet):
    ctx, (_, stays) = fleet
    heard = ctx.clock()
    ctx.clock.now += ctx.settings.offline_after_s + 1
    _beat(ctx, stays)
    families = _families(metrics.render(ctx))
    hosts = {s.labels["host"] for s in families["aiorch_host_cpu_utilization_percent"].samples}
    assert hosts == {"gpu-b"}, "an offline host's latest values are not exported"
    assert 'Hostname="gpu-a"' not in metrics.render_dcgm(ctx).decode()
    online = {s.labels["host"]: s.value for s in families["aiorch_agent_online"].samples}
    assert online == {"gpu-a": 0.0, "gpu-b": 1.0}
    last = families["aiorch_agent_last_report_timestamp_seconds"].samples
    assert {s.labels["host"]: s.value for s in last}["gpu-a"] == heard


def test_reserved_series_are_dropped_alone_counted_and_logged_once(fleet, caplog):
    ctx, (agent_id, _) = fleet
    now = ctx.clock()
    sent = [
        (now, "host_load1", 0.5, {}),
        (now, "aiorch_agents", 1.0, {"status": "online"}),
        (now, "agents", 1.0, {}),
        (now, "gpu_power_watts", 1.0, {"host": "someone-else"}),
        (now, "gpu_power_watts", 1.0, {"__name__": "x"}),
    ]
    before = {
        r: metrics.SERIES_REFUSED.labels(r)._value.get()
        for r in ("reserved_name", "reserved_label")
    }
    with caplog.at_level(logging.WARNING, "aiorch.hub.telemetry"):
        reply = _upload(ctx, agent_id, sent, epoch="e2")
        _upload(ctx, agent_id, sent, epoch="e3")
    assert reply["stored"] == 1 and not reply["duplicate"]
    assert [r["reason"] for r in reply["refused"]] == [
        "reserved_name",
        "reserved_name",
        "reserved_label",
        "reserved_label",
    ]
    assert metrics.SERIES_REFUSED.labels("reserved_name")._value.get() == (
        before["reserved_name"] + 4
    )
    assert len([r for r in caplog.records if "aiorch_agents" in r.getMessage()]) == 1
    stored = {r[0] for r in ctx.store.read().execute("SELECT metric FROM series")}
    assert "host_load1" in stored and not {"aiorch_agents", "agents"} & stored
    text = metrics.render(ctx)
    assert text.count(b"# TYPE aiorch_agents gauge") == 1
    assert b"someone-else" not in text


def test_hub_family_list_names_every_family_the_hub_exposes(make_context):
    ctx = make_context()
    names = {
        f.name.removesuffix("_created")  # a counter's creation time, its own family
        for f in text_string_to_metric_families(metrics.render(ctx).decode())
    }
    assert {n for n in names if n.startswith("aiorch_")} == exposition.HUB_FAMILIES
    assert exposition.refusal("checkins_created", {}) == "reserved_name"


def test_outbox_drops_and_gpu_use_per_project_are_exposed_for_the_alerts(fleet):
    ctx, (agent_id, _) = fleet
    now = ctx.clock()
    rows = [{"seq": 0, "ts": now, "metric": "host_load1", "value": 1.0, "labels": {}}]
    pending = {"epoch": "e9", "seq_start": 0, "seq_end": 0, "dropped": 5, "samples": rows}
    asyncio.run(telemetry.ingest(ctx, agent_id, TelemetryBatch.model_validate(wire_batch(pending))))
    telemetry.downsample(ctx)
    families = _families(metrics.render(ctx))
    drops = families["aiorch_agent_outbox_dropped_samples"].samples
    assert {s.labels["host"]: s.value for s in drops if s.name.endswith("_total")} == {
        "gpu-a": 5.0,
        "gpu-b": 0.0,
    }
    used = {
        (s.labels["project"], s.labels["simulated"]): s.value
        for s in families["aiorch_project_gpu_used_seconds"].samples
    }
    # 8 simulated GPUs, no workload, each one minute: utilization / 100 * 60 GPU-seconds.
    assert set(used) == {("unassigned", "true")} and 0 < used["unassigned", "true"] <= 8 * 60


def test_a_scrape_figure_over_rollups_is_computed_once_a_minute_per_key():
    memo, calls = PerMinute(), []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert memo.get(600.0, "a", compute) == 1
    assert memo.get(659.9, "a", compute) == 1  # the same minute: no second scan
    assert memo.get(659.9, "b", compute) == 2  # another key (projects) is its own figure
    assert memo.get(660.0, "a", compute) == 3  # a new minute: computed afresh
