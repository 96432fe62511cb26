"""`/metrics` for Prometheus: the hub's own metrics and the fleet's latest readings.

Fleet series are `aiorch_`-prefixed, typed and gain `host` and `site` (services.exposition),
so a GPU reading becomes e.g. `aiorch_gpu_utilization_percent{host="dc1-1",site="dc1",...}`.
Each host's last check-in is its own gauge; an offline host's readings are not shown at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aiorch.deploy.rollout import ACTIVE
from aiorch.hub.context import HubContext
from aiorch.hub.services import accounting, agents, budgets, exposition, replicas

CHECKINS = Counter("aiorch_checkins", "Agent check-ins received.")
SAMPLES_STORED = Counter("aiorch_telemetry_samples_stored", "Telemetry samples stored.")
SAMPLES_DUPLICATE = Counter(
    "aiorch_telemetry_samples_duplicate", "Telemetry samples received again and not stored."
)
SERIES_REFUSED = Counter(
    "aiorch_telemetry_series_refused",
    "Telemetry series dropped at ingest, by reason (a reserved name or label).",
    ["reason"],
)
for _reason in (exposition.RESERVED_NAME, exposition.RESERVED_LABEL):
    SERIES_REFUSED.labels(_reason)  # at 0 from the start, so the first refusal is an increase

REPLICA_STATES = ("pending", "starting", "healthy", "unhealthy", "failed")


class FleetCollector(Collector):
    def __init__(self, ctx: HubContext, projects: frozenset[str] | None = None) -> None:
        self.ctx = ctx
        self.projects = projects  # whose deployments are shown; None: every project's

    def collect(self) -> Iterator[Metric]:
        rows = agents.list_agents(self.ctx)
        yield from self._hub_metrics(rows)
        yield from self._agent_metrics(rows)
        yield from self._deployment_metrics()
        yield from self._gpu_use()
        yield from budgets.metric_families(self.ctx.store.read(), self.ctx.clock(), self.projects)
        yield from exposition.fleet_families(self.ctx.latest.snapshot(), shown_hosts(rows))

    def _hub_metrics(self, rows: list[dict[str, Any]]) -> Iterator[Metric]:
        by_status: dict[str, int] = defaultdict(int)
        for row in rows:
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
        db = self.ctx.store.read()
        drops = db.execute("SELECT COALESCE(SUM(dropped), 0) FROM streams").fetchone()[0]
        yield GaugeMetricFamily(
            "aiorch_telemetry_agent_dropped_samples",
            "Samples agents dropped before upload (outbox full), as they reported.",
            value=drops,
        )
        family = GaugeMetricFamily(
            "aiorch_drift_findings",
            "1 per host the last drift check found drifted or could not finish on (unknown).",
            labels=["host", "state"],
        )
        for host, state in db.execute("SELECT host, state FROM drift ORDER BY host"):
            family.add_metric([host, state], 1)
        yield family

    def _agent_metrics(self, rows: list[dict[str, Any]]) -> Iterator[Metric]:
        """Per host, online or not (revoked agents are gone): an offline host's readings
        vanish from `/metrics`, so these say when it was last heard from."""
        labels = ["host", "site"]
        online = GaugeMetricFamily(
            "aiorch_agent_online", "1 while the host's agent checks in.", labels=labels
        )
        last = GaugeMetricFamily(
            "aiorch_agent_last_report_timestamp_seconds",
            "When the host's agent last checked in, Unix seconds.",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            "aiorch_agent_outbox_dropped_samples",
            "Samples the host's agent dropped before upload (outbox full), as it reported.",
            labels=labels,
        )
        drops = dict(
            self.ctx.store.read().execute(
                "SELECT agent_id, SUM(dropped) FROM streams GROUP BY agent_id"
            )
        )
        for row in _newest_per_host(r for r in rows if r["status"] != "revoked"):
            where = [row["host_name"], row["site"] or ""]
            online.add_metric(where, float(row["status"] == "online"))
            if row["last_seen"] is not None:
                last.add_metric(where, row["last_seen"])
            dropped.add_metric(where, drops.get(row["id"], 0))
        yield from (online, last, dropped)

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
        family = GaugeMetricFamily(
            "aiorch_deployment_rollout_state",
            "1 for the state of each deployment's latest rollout (failed and rolled_back stay"
            " until the next rollout).",
            labels=["deployment", "project", "state"],
        )
        for name, project, state in db.execute(
            "SELECT r.deployment, d.project, r.state FROM rollouts r "
            "JOIN deployments d ON d.name = r.deployment "
            "WHERE r.id = (SELECT MAX(id) FROM rollouts l WHERE l.deployment = r.deployment) "
            "ORDER BY r.deployment"
        ):
            if self.projects is None or project in self.projects:
                family.add_metric([name, project, state], 1)
        yield family

    def _gpu_use(self) -> Iterator[Metric]:
        """The budget alert's metric: GPU time each project used over the last day."""
        family = GaugeMetricFamily(
            "aiorch_project_gpu_used_seconds",
            "GPU time used over the last 24 hours by project (GPU-seconds at full"
            " utilization, from the one-minute rollups); unassigned: GPUs no workload held.",
            labels=["project", "simulated"],
        )
        rows = self.ctx.per_minute.get(
            self.ctx.clock(),
            ("gpu_use", self.projects),
            lambda: accounting.gpu_hours(self.ctx, "project", 86400, self.projects),
        )
        for row in rows:
            simulated = "true" if row["simulated"] else "false"
            family.add_metric([row["project"], simulated], row["gpu_hours_used"] * 3600)
        yield family


def _newest_per_host(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of agents sharing a host name (a re-enrolled host), the one seen last, so no series
    appears twice (a repeated series spoils the scrape)."""
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = newest.get(row["host_name"])
        if seen is None or (row["last_seen"] or 0) > (seen["last_seen"] or 0):
            newest[row["host_name"]] = row
    return list(newest.values())


def shown_hosts(rows: list[dict[str, Any]]) -> exposition.Hosts:
    """The online agents whose readings are shown, by id."""
    online = _newest_per_host(r for r in rows if r["status"] == "online")
    return {row["id"]: (row["host_name"], row["site"] or "") for row in online}


def render(ctx: HubContext, projects: frozenset[str] | None = None) -> bytes:
    from prometheus_client import REGISTRY

    registry = CollectorRegistry()
    registry.register(FleetCollector(ctx, projects))
    return generate_latest(REGISTRY) + generate_latest(registry)


def render_dcgm(ctx: HubContext) -> bytes:
    """`/metrics/dcgm`: the online hosts' GPU series under the DCGM exporter's names."""
    return exposition.dcgm_text(ctx.latest.snapshot(), shown_hosts(agents.list_agents(ctx)))
