"""Telemetry collectors. Each returns samples as (ts, metric, value, labels) tuples, the outbox's
format, with Prometheus-style metric names that carry their unit."""

from __future__ import annotations

from edge_agent.collectors.gpu import GpuCollector
from edge_agent.collectors.host import HostCollector
from edge_agent.collectors.network import NetworkCollector
from edge_agent.collectors.runner import Collector, Collectors
from edge_agent.collectors.workloads import WorkloadCollector
from edge_agent.gpu import GpuBackend

__all__ = ["Collector", "Collectors", "default_collectors"]


def default_collectors(gpus: GpuBackend) -> Collectors:
    """What the agent sends every round. The caller still owns (and closes) `gpus`."""
    return Collectors(
        [GpuCollector(gpus), HostCollector(), NetworkCollector(), WorkloadCollector()]
    )
