"""How the fleet's stored series look to Prometheus: names, types, labels, and what is refused.

Stored names never change (the dashboard, GPU accounting and `aiorch telemetry` read them);
only the exposition maps them. On `/metrics` every agent series is `aiorch_<stored name>`,
typed by the shared contract (edge_agent.contract.telemetry), with `host` and `site` added.
On `/metrics/dcgm` the GPU series also appear under the DCGM exporter's names, units and
labels, so NVIDIA's DCGM Grafana dashboard works against the hub unchanged. Neither carries
timestamps, and neither shows an agent that is not online: its series go stale in Prometheus
the way a dead target's do.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from aiorch.hub.services.latest import Latest
from aiorch.hub.services.series import SeriesKey
from edge_agent.contract import telemetry
from edge_agent.contract.telemetry import COUNTER, GAUGE, GPU_UTILIZATION, Kind

NAMESPACE = "aiorch_"
# The hub's own families (metrics.py), by name without `_total` or `_created`: an agent
# series named so (`agents` -> `aiorch_agents`) would repeat a family and break the scrape.
HUB_FAMILIES = frozenset(
    {
        "aiorch_agents",
        "aiorch_agent_online",
        "aiorch_agent_last_report_timestamp_seconds",
        "aiorch_agent_outbox_dropped_samples",
        "aiorch_checkins",
        "aiorch_deployment_replicas",
        "aiorch_deployment_rollout_state",
        "aiorch_drift_findings",
        "aiorch_jobs",
        "aiorch_job_gpu_hours_used",
        "aiorch_project_gpu_hours_budget",
        "aiorch_project_gpu_hours_remaining",
        "aiorch_project_gpu_used_seconds",
        "aiorch_rollouts_active",
        "aiorch_store_write_queue_depth",
        "aiorch_telemetry_agent_dropped_samples",
        "aiorch_telemetry_samples_duplicate",
        "aiorch_telemetry_samples_stored",
        "aiorch_telemetry_series_refused",
    }
)
# Labels the hub adds to agent series; one sent by an agent would clash with (or forge) ours.
RESERVED_LABELS = frozenset({"host", "site", "Hostname", "UUID", "modelName", "instance", "job"})

RESERVED_NAME, RESERVED_LABEL = "reserved_name", "reserved_label"  # why a series is refused

Hosts = Mapping[str, tuple[str, str]]  # agent id -> (host, site), only the agents shown


def refusal(metric: str, labels: Mapping[str, str]) -> str | None:
    """Why an agent may not send this series (the `reason` label of the refusal counter), or
    None. Prometheus keeps `__` names to itself."""
    if metric.startswith(NAMESPACE) or _stem(NAMESPACE + metric) in HUB_FAMILIES:
        return RESERVED_NAME
    if any(name in RESERVED_LABELS or name.startswith("__") for name in labels):
        return RESERVED_LABEL
    return None


def _stem(name: str) -> str:
    """A family's name as its samples' names start: a counter also exposes `_created`."""
    return name.removesuffix("_total").removesuffix("_created")


def _shown(
    snapshot: Mapping[SeriesKey, Latest], hosts: Hosts
) -> Iterator[tuple[str, str, str, dict[str, str], Latest]]:
    """(agent id, host, metric, agent labels with site, latest) of the agents shown."""
    for (agent_id, metric, labels_json), latest in snapshot.items():
        where = hosts.get(agent_id)
        if where is not None:
            labels = {**json.loads(labels_json), "site": where[1]}
            yield agent_id, where[0], metric, labels, latest


def fleet_families(snapshot: Mapping[SeriesKey, Latest], hosts: Hosts) -> Iterator[Metric]:
    """One family per stored name, `aiorch_`-prefixed and typed, without timestamps."""
    series: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for _, host, metric, labels, latest in _shown(snapshot, hosts):
        series[metric].append(({**labels, "host": host}, latest.value))
    for metric, rows in sorted(series.items()):
        kind, text = telemetry.METRICS.get(metric, (telemetry.kind(metric), f"{metric}."))
        # The exposition format allows no repeated family; series without some label get
        # it empty, which Prometheus reads as absent.
        names = sorted({name for labels, _ in rows for name in labels})
        make = CounterMetricFamily if kind == COUNTER else GaugeMetricFamily
        family = make(NAMESPACE + metric, f"{text} As the agent last reported.", labels=names)
        for labels, value in rows:
            family.add_metric([labels.get(n, "") for n in names], value)
        yield family


# ---- DCGM exporter names (NVIDIA/dcgm-exporter etc/default-counters.csv) -------------------

MIB = 1024 * 1024


@dataclass(frozen=True)
class Dcgm:
    """A DCGM field a stored series maps to: its kind and help as dcgm-exporter gives them,
    the factor to DCGM's unit, and the stored labels that select it (dropped from the DCGM
    series)."""

    name: str
    kind: Kind
    help: str
    factor: float = 1.0
    match: Mapping[str, str] = field(default_factory=dict)


def _ecc(counter: str, kind: str, name: str, what: str) -> Dcgm:
    match = {"counter": counter, "type": kind}
    return Dcgm(name, COUNTER, f"Total number of {what} ECC errors.", match=match)


DCGM: dict[str, tuple[Dcgm, ...]] = {
    GPU_UTILIZATION: (Dcgm("DCGM_FI_DEV_GPU_UTIL", GAUGE, "GPU utilization (in %)."),),
    "gpu_memory_utilization_percent": (
        Dcgm("DCGM_FI_DEV_MEM_COPY_UTIL", GAUGE, "Memory utilization (in %)."),
    ),
    "gpu_memory_used_bytes": (
        Dcgm("DCGM_FI_DEV_FB_USED", GAUGE, "Framebuffer memory used (in MiB).", 1 / MIB),
    ),
    "gpu_memory_total_bytes": (
        Dcgm("DCGM_FI_DEV_FB_TOTAL", GAUGE, "Framebuffer memory total (in MiB).", 1 / MIB),
    ),
    "gpu_temperature_celsius": (Dcgm("DCGM_FI_DEV_GPU_TEMP", GAUGE, "GPU temperature (in C)."),),
    "gpu_power_watts": (Dcgm("DCGM_FI_DEV_POWER_USAGE", GAUGE, "Power draw (in W)."),),
    "gpu_sm_clock_hertz": (
        Dcgm("DCGM_FI_DEV_SM_CLOCK", GAUGE, "SM clock frequency (in MHz).", 1e-6),
    ),
    "gpu_energy_joules_total": (
        Dcgm(
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            COUNTER,
            "Total energy consumption since boot (in mJ).",
            1e3,
        ),
    ),
    "gpu_performance_state": (Dcgm("DCGM_FI_DEV_PSTATE", GAUGE, "Performance state (P-State)."),),
    "gpu_clocks_event_reasons": (
        Dcgm("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", GAUGE, "Current clock throttle reasons."),
    ),
    "gpu_ecc_errors_total": (
        _ecc("volatile", "corrected", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "single-bit volatile"),
        _ecc("volatile", "uncorrected", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "double-bit volatile"),
        _ecc("aggregate", "corrected", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "single-bit persistent"),
        _ecc("aggregate", "uncorrected", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "double-bit persistent"),
    ),
    "gpu_remapped_rows": (
        Dcgm(
            "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
            COUNTER,
            "Number of remapped rows for correctable errors",
            match={"type": "correctable"},
        ),
        Dcgm(
            "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
            COUNTER,
            "Number of remapped rows for uncorrectable errors",
            match={"type": "uncorrectable"},
        ),
    ),
    "gpu_remapped_rows_pending": (
        Dcgm("DCGM_FI_DEV_ROW_REMAP_PENDING", GAUGE, "Whether remapping of rows is pending"),
    ),
    "gpu_remapped_rows_failure": (
        Dcgm("DCGM_FI_DEV_ROW_REMAP_FAILURE", GAUGE, "Whether remapping of rows has failed"),
    ),
}
# DCGM's XID field is the last XID seen, not a count: the newest of a GPU's per-XID counts.
XID_METRIC = "gpu_xid_errors_total"
XID = Dcgm("DCGM_FI_DEV_XID_ERRORS", GAUGE, "Value of the last XID error encountered.")


def _dcgm_labels(host: str, labels: Mapping[str, str], drop: Mapping[str, str]) -> dict[str, str]:
    """DCGM's labels (`gpu`, `UUID`, `modelName`, `Hostname`, and `instance` for the
    dashboard's host picker, kept with `honor_labels`), then the agent's other labels."""
    rest = {k: v for k, v in labels.items() if k not in drop and k not in ("uuid", "product")}
    return {
        **rest,
        "gpu": labels.get("gpu", ""),
        "UUID": labels.get("uuid", ""),
        "modelName": labels.get("product", ""),
        "Hostname": host,
        "instance": host,
    }


def dcgm_text(snapshot: Mapping[SeriesKey, Latest], hosts: Hosts) -> bytes:
    """The GPU series as dcgm-exporter exposes them. Written here rather than through
    prometheus_client, which would add `_total` to DCGM's counter names."""
    families: dict[str, tuple[Dcgm, list[tuple[dict[str, str], float]]]] = {}
    newest_xid: dict[tuple[str, str], tuple[float, dict[str, str], float]] = {}
    for agent_id, host, metric, labels, latest in _shown(snapshot, hosts):
        if metric == XID_METRIC:
            key = (agent_id, labels.get("uuid", "") + "/" + labels.get("gpu", ""))
            if key not in newest_xid or latest.ts >= newest_xid[key][0]:
                xid = float(labels.get("xid", "0") or 0)
                newest_xid[key] = (latest.ts, _dcgm_labels(host, labels, {"xid": ""}), xid)
            continue
        for dcgm in DCGM.get(metric, ()):
            if all(labels.get(k) == v for k, v in dcgm.match.items()):
                rows = families.setdefault(dcgm.name, (dcgm, []))[1]
                rows.append((_dcgm_labels(host, labels, dcgm.match), latest.value * dcgm.factor))
    if newest_xid:
        families[XID.name] = (XID, [(labels, xid) for _, labels, xid in newest_xid.values()])
    lines: list[str] = []
    for name, (dcgm, rows) in sorted(families.items()):
        lines += [f"# HELP {name} {_escape(dcgm.help)}", f"# TYPE {name} {dcgm.kind}"]
        for labels, value in rows:
            pairs = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{pairs}}} {floatToGoString(value)}")
    return "".join(line + "\n" for line in lines).encode()


def _escape(text: str, quote: bool = False) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if quote else text
