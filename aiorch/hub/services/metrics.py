"""`/metrics` for Prometheus: the hub's own metrics and the fleet's latest readings.

Fleet series keep their metric names and labels and gain `host` and `site`, so a GPU
reading becomes e.g. `gpu_utilization_percent{host="dc1-1",site="dc1",gpu="0",...}`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aiorch.deploy.rollout import ACTIVE
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, replicas

CHECKINS = Counter("aiorch_checkins", "Agent check-ins received.")
SAMPLES_STORED = Counter("aiorch_telemetry_samples_stored", "Telemetry samples stored.")
SAMPLES_DUPLICATE = Counter(
    "aiorch_telemetry_samples_duplicate", "Telemetry samples received again and not stored."
)

REPLICA_STATES = ("pending", "starting", "healthy", "unhealthy", "failed")


class FleetCollector(Collector):
    def __init__(self, ctx: HubContext, projects: frozenset[str] | None = None) -> None:
        self.ctx = ctx
        self.projects = projects  # whose deployments are shown; None: every project's

    def collect(self) -> Iterator[Metric]:
        yield from self._hub_metrics()
        yield from self._deployment_metrics()
        yield from self._fleet_metrics()

    def _hub_metrics(self) -> Iterator[Metric]:
        by_status: dict[str, int] = defaultdict(int)
        for row in agents.list_agents(self.ctx):
            by_status[row["status"]] += 1
        family = GaugeMetricFamily("aiorch_agents", "Agents by liveness.", labels=["status"])
        for status in ("online", "offline", "revoked"):
            family.add_metric([status], by_status[status])
        yield family
        yield GaugeMetricFamily(
            "aiorch_store_write_queue_depth",
            "Writes waiting for the single store writer.",
            value=self.ctx.store.pending_writes,
        )
        drops = (
            self.ctx.store.read()
            .execute("SELECT COALESCE(SUM(dropped), 0) FROM streams")
            .fetchone()[0]
        )
        yield GaugeMetricFamily(
            "aiorch_telemetry_agent_dropped_samples",
            "Samples agents dropped before upload (outbox full), as they reported.",
            value=drops,
        )

    def _deployment_metrics(self) -> Iterator[Metric]:
        db = self.ctx.store.read()
        family = GaugeMetricFamily(
            "aiorch_deployment_replicas",
            "Replicas by the state their agents last reported (pending: no report yet).",
            labels=["deployment", "project", "state"],
        )
        for (name, project), counts in replicas.states(self.ctx, db).items():
            if self.projects is not None and project not in self.projects:
                continue
            for state in REPLICA_STATES:
                family.add_metric([name, project, state], counts[state])
        yield family
        marks = ",".join("?" * len(ACTIVE))
        active = dict(
            db.execute(
                f"SELECT state, COUNT(*) FROM rollouts WHERE state IN ({marks}) GROUP BY state",
                list(ACTIVE),
            )
        )
        family = GaugeMetricFamily(
            "aiorch_rollouts_active", "Rollouts under way, by state.", labels=["state"]
        )
        for state in ACTIVE:
            family.add_metric([state], active.get(state, 0))
        yield family

    def _fleet_metrics(self) -> Iterator[Metric]:
        where = {
            r[0]: (r[1], r[2])
            for r in self.ctx.store.read().execute("SELECT id, host_name, site FROM agents")
        }
        series: dict[str, list[tuple[dict[str, str], float, float]]] = defaultdict(list)
        for (agent_id, metric, labels_json), latest in self.ctx.latest.snapshot().items():
            host, site = where.get(agent_id, ("unknown", "unknown"))
            labels = {**json.loads(labels_json), "host": host, "site": site or ""}
            series[metric].append((labels, latest.value, latest.ts))
        for metric, rows in sorted(series.items()):
            # One family per name (the exposition format allows no repeats); series
            # without some label get it empty, which Prometheus reads as absent.
            names = sorted({name for labels, _, _ in rows for name in labels})
            family = GaugeMetricFamily(metric, f"Latest {metric} reported by agents.", labels=names)
            for labels, value, ts in rows:
                family.add_metric([labels.get(n, "") for n in names], value, timestamp=ts)
            yield family


def render(ctx: HubContext, projects: frozenset[str] | None = None) -> bytes:
    from prometheus_client import REGISTRY

    registry = CollectorRegistry()
    registry.register(FleetCollector(ctx, projects))
    return generate_latest(REGISTRY) + generate_latest(registry)
