"""Model-serving workloads on this host: the hub's desired workloads become podman containers,
kept running, health-checked and reported back (see reconcile.py)."""

from edge_agent.workloads.podman import Podman
from edge_agent.workloads.reconcile import Reconciler

__all__ = ["Podman", "Reconciler"]
