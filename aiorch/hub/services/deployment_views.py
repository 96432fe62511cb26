"""Deployments as people read them: the list, one deployment with its spec, rollout,
replicas and autoscaling state, and which project one belongs to."""

from __future__ import annotations

from typing import Any

from aiorch.errors import NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import authz, autoscaling, rollouts, specs


def list_deployments(
    ctx: HubContext,
    projects: frozenset[str] | None = None,
    *,
    limit: int = -1,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The deployments of `projects` (None: of every project), by name; `limit` and `offset`
    give one page of them (the default limit, -1, is all)."""
    where, params = authz.sql_in("d.project", projects)
    return list(
        ctx.store.read().query(
            "SELECT d.name, d.project, d.generation, d.revision, d.updated_by, d.updated_at, "
            "COUNT(r.ordinal) AS replicas FROM deployments d "
            "LEFT JOIN deployment_replicas r ON r.deployment = d.name "
            f"WHERE {where} GROUP BY d.name ORDER BY d.name LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
    )


def project_of(ctx: HubContext, name: str) -> str:
    """The project deployment `name` belongs to (404 if there is none)."""
    row = ctx.store.read().execute("SELECT project FROM deployments WHERE name = ?", [name])
    found = row.fetchone()
    if found is None:
        raise NotFound(f"no deployment named {name}")
    return str(found[0])


def show(ctx: HubContext, name: str) -> dict[str, Any]:
    """A deployment with its spec (secrets masked), revisions, latest rollout and replicas as
    their agents last reported them."""
    row = (
        ctx.store.read()
        .execute("SELECT project, generation, spec FROM deployments WHERE name = ?", [name])
        .fetchone()
    )
    if row is None:
        raise NotFound(f"no deployment named {name}")
    spec = specs.from_store(ctx, row[2])
    shown = {
        "project": row[0],
        "generation": row[1],
        "spec": spec.model_dump(mode="json", by_alias=True),
        **rollouts.status(ctx, name),
    }
    if spec.spec.autoscale is not None:
        found = autoscaling.stored_state(ctx.store.read(), name)
        shown["autoscale"] = {"replicas": spec.spec.replicas, **(found or {"desired": None})}
    return shown
