"""State of the containers the agent manages. The agent sets `statuses` after every
reconcile pass (edge_agent.workloads), so a round's samples describe that round's containers."""

from __future__ import annotations

from typing import TypedDict

from edge_agent.outbox import Sample


class ContainerStatus(TypedDict):
    name: str
    state: str  # podman's State.Status: "running", "exited", ...
    restarts: int
    health: str  # "healthy", "unhealthy", "starting", or "" without a health check


def workload_samples(now: float, statuses: list[ContainerStatus]) -> list[Sample]:
    samples: list[Sample] = []
    for status in statuses:
        labels = {"container": status["name"]}
        samples.append((now, "workload_running", float(status["state"] == "running"), labels))
        samples.append((now, "workload_restarts_total", float(status["restarts"]), labels))
        if status["health"]:
            healthy = float(status["health"] == "healthy")
            samples.append((now, "workload_healthy", healthy, labels))
    return samples


class WorkloadCollector:
    name = "workloads"

    def __init__(self) -> None:
        self.statuses: list[ContainerStatus] = []

    def collect(self, now: float) -> list[Sample]:
        return workload_samples(now, self.statuses)

    def close(self) -> None:
        return None  # holds nothing
