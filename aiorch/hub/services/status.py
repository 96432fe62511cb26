"""The one-screen fleet overview behind `aiorch status`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiorch import __version__
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, bundles, drift, inventory, replicas, rollouts


def overview(ctx: HubContext, projects: frozenset[str] | None = None) -> dict[str, Any]:
    """The fleet, and the deployments of `projects` (None: of every project)."""
    hosts = inventory.list_hosts(ctx)
    agent_rows = agents.list_agents(ctx)
    per_site: dict[str, dict[str, int]] = {}
    held: dict[str, dict[str, Any]] = {}
    for host in hosts:
        name = host["site"] or "-"
        site = per_site.setdefault(name, Counter())
        site["hosts"] += 1
        site["gpus_simulated" if host["gpus_simulated"] else "gpus"] += host["gpus"]
        site[f"agents_{host['agent']}"] += 1
        content = held.setdefault(name, {"releases": Counter(), "models": set()})
        content["releases"][str(host["site_release"] or "none")] += 1
        content["models"].update(host["models"])
    return {
        "hub_version": __version__,
        "hosts": len(hosts),
        "gpus": sum(h["gpus"] for h in hosts if not h["gpus_simulated"]),
        "gpus_simulated": sum(h["gpus"] for h in hosts if h["gpus_simulated"]),
        "agents": dict(Counter(a["status"] for a in agent_rows)),
        "sites": [
            {
                "site": name,
                **dict(counts),
                # Bundle versions by host count ("none": not provisioned from a bundle), and
                # the model digests the site's hosts hold: an old release stands out.
                "releases": dict(sorted(held[name]["releases"].items())),
                "models": sorted(held[name]["models"]),
            }
            for name, counts in sorted(per_site.items())
        ],
        "poll_interval_s": ctx.settings.poll_interval_s,
        "drift": drift.findings(ctx),
        "bundle": bundles.current(ctx),  # the imported content hosts are given, if any
        "deployments": _deployments(ctx, projects),
    }


def _deployments(ctx: HubContext, projects: frozenset[str] | None) -> list[dict[str, Any]]:
    """Each deployment's replicas by state, and its rollout if one is under way."""
    db = ctx.store.read()
    rows = []
    for (name, project), counts in replicas.states(ctx, db).items():
        if projects is not None and project not in projects:
            continue
        rollout = rollouts.active(db, name)
        rows.append(
            {
                "deployment": name,
                "project": project,
                "replicas": sum(counts.values()),
                **{state: counts[state] for state in ("healthy", "pending", "starting")},
                "not_healthy": counts["unhealthy"] + counts["failed"],
                "rollout": ""
                if rollout is None
                else f"{rollout['state']} to revision {rollout['to_revision']}",
            }
        )
    return rows
