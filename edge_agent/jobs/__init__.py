"""Jobs on the agent: run the hub's attempts with podman, journal them, report them."""

from edge_agent.jobs.runner import JobRunner

__all__ = ["JobRunner"]
