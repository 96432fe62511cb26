"""Replicas between the hub and the agents: each agent's desired workloads are written from
the replicas placed on its host (each at the revision it is meant to run), and what agents
report about them is read back for `show`, rollouts and their status."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import sqlite_utils

from aiorch.deploy import DeploymentSpec, Replica, SpecError, template_hash
from aiorch.deploy.host_paths import refuse_outside
from aiorch.deploy.rollout import Observed
from aiorch.deploy.spec import ContainerSpec, with_template
from aiorch.hub.context import HubContext
from aiorch.hub.services import agent_power, agents, images, models, specs
from aiorch.hub.services.job_runs import job_entries
from aiorch.hub.services.projects import DEFAULT, allowed_host_paths
from aiorch.hub.services.reports import reported_workloads
from aiorch.jobs.spec import JobSpec
from edge_agent.contract.fields import ContractError
from edge_agent.contract.model import ModelRef
from edge_agent.contract.workload import (
    HealthCheck,
    Image,
    Metric,
    Port,
    Volume,
    Workload,
    desired_document,
    parse_workload,
    published_port,
    workload_entry,
)

# Stands in for the image store's answer when a spec is checked before it is placed.
_SOME_IMAGE = {"digest": "sha256:" + "0" * 64, "size": 1}


def workload_id(project: str, deployment: str, ordinal: int) -> str:
    """How agents name a replica in their reports."""
    return f"{project}/{deployment}/{ordinal}"


def container_parts(body: ContainerSpec, stored: dict[str, Any]) -> dict[str, Any]:
    """What a replica's Workload and a job's JobRun take alike from their spec: the image (as
    the store has it), command, args, env, volumes and limits (0 is no limit)."""
    return {
        # An image missing from the store gets no digest: the agent reports it as invalid.
        "image": Image(body.image, stored.get("digest") or "", stored.get("size") or 0),
        "command": tuple(body.command),
        "args": tuple(body.args),
        "env": dict(body.env),
        "volumes": tuple(Volume(v.host_path, v.mount_path, v.read_only) for v in body.volumes),
        "cpu": body.resources.cpu or None,
        "memory_mib": body.resources.memory_mib or None,
    }


def workload(
    ctx: HubContext,
    spec: DeploymentSpec,
    stored: dict[str, Any],
    replica: Replica,
    weights: tuple[ModelRef, ...] = (),
) -> Workload:
    """One replica as its agent runs it; secret values stay sealed in the stored desired state
    and are opened only on their way to the agent."""
    body = spec.spec
    health, scaling = body.health_check, body.autoscale
    return Workload(
        id=workload_id(spec.metadata.project, spec.metadata.name, replica.ordinal),
        project=spec.metadata.project,
        deployment=spec.metadata.name,
        replica=replica.ordinal,
        template_hash=template_hash(spec),
        **container_parts(body, stored),
        secret_env=ctx.sealer.seal_env(
            {k: v.get_secret_value() for k, v in body.secret_env.items()},
            spec.metadata.project,
            spec.metadata.name,
        ),
        ports=tuple(
            Port(
                p.container_port, published_port(p.container_port, p.host_port), p.protocol.lower()
            )
            for p in body.ports
        ),
        gpus=replica.gpus,
        health_check=None
        if health is None
        else HealthCheck(
            path=health.http_get.path,
            port=health.http_get.port,  # a container port; probed where it is published
            initial_delay_s=float(health.initial_delay_seconds),
            period_s=float(health.period_seconds),
            timeout_s=float(health.timeout_seconds),
            failure_threshold=health.failure_threshold,
        ),
        models=weights,
        metric=None if scaling is None else Metric(scaling.metric, scaling.port, scaling.path),
    )


def model_refs(db: sqlite_utils.Database, spec: DeploymentSpec | JobSpec) -> tuple[ModelRef, ...]:
    """The spec's models with their file lists, from the store: of its project or `default`.
    A model missing there is a 422 naming it (`aiorch model push`, or a bundle import)."""
    owners = frozenset({spec.metadata.project, DEFAULT})
    refs = []
    for position, model in enumerate(spec.spec.models):
        files = models.files_of(db, model.name, model.digest, owners)
        if not files:
            raise SpecError(
                [
                    f"spec.models[{position}]: no model {model.name}@{model.digest} in the "
                    f"hub's store for project {spec.metadata.project}"
                ]
            )
        refs.append(ModelRef(model.name, model.digest, files, model.mount_path))
    return tuple(refs)


def refuse_undeliverable(ctx: HubContext, spec: DeploymentSpec) -> None:
    """Read a replica of `spec` with the agents' own parser before anything is planned or
    stored, so a spec every agent would refuse (a ':' in a volume path, a newline in an env
    value, two ports published on one host port) is a 422 at the door, not a failed replica on
    every host. Then its host paths against its project's policy (403)."""
    weights = model_refs(ctx.store.read(), spec)
    try:
        entry = workload_entry(workload(ctx, spec, _SOME_IMAGE, Replica(0, "", ()), weights))
        parse_workload(entry)
    except ContractError as exc:
        raise SpecError([f"spec: an agent would refuse it: {exc}"]) from None
    project = spec.metadata.project
    volumes = [
        (f"spec.volumes[{i}] (mountPath {v.mount_path})", v.host_path)
        for i, v in enumerate(spec.spec.volumes)
    ]
    refuse_outside(project, allowed_host_paths(ctx.store.read(), project), volumes)


def publish(ctx: HubContext, db: sqlite_utils.Database, hosts: set[str], actor: str) -> None:
    """Rewrite the desired state of the agents on `hosts` from the replicas and the job
    attempts placed there (a host running no job gets no "jobs" key)."""
    made_of: dict[tuple[str, int], DeploymentSpec] = {}
    stored: dict[tuple[str, int], dict[str, Any]] = {}
    weights: dict[tuple[str, int], tuple[ModelRef, ...]] = {}
    for host in sorted(hosts):
        agent = db.execute(
            "SELECT agent_id FROM hosts WHERE name = ? AND agent_id IS NOT NULL", [host]
        ).fetchone()
        if agent is None:
            continue
        workloads = []
        for name, revision, ordinal, gpus in db.execute(
            "SELECT deployment, revision, ordinal, gpus FROM deployment_replicas "
            "WHERE host = ? ORDER BY deployment, ordinal",
            [host],
        ).fetchall():
            key = (name, revision)
            if key not in made_of:  # each revision's spec and image looked up once
                made_of[key] = _scaled(ctx, db, name, specs.revision(ctx, db, name, revision))
                stored[key] = images.resolve(db, made_of[key].spec.image) or {}
                weights[key] = stored_models(db, made_of[key])
            replica = Replica(ordinal, host, tuple(json.loads(gpus)))
            workloads.append(workload(ctx, made_of[key], stored[key], replica, weights[key]))
        document = desired_document(workloads)
        runs = job_entries(db, host)
        if runs:
            document["jobs"] = runs
        power = agent_power.pending(db, host)
        if power is not None:  # a no-BMC machine's reboot or power-off, until answered
            document["power"] = power
        agents.write_desired(db, agent[0], document, actor, ctx.clock())


def _scaled(
    ctx: HubContext, db: sqlite_utils.Database, name: str, made: DeploymentSpec
) -> DeploymentSpec:
    """A revision's template scaled as its deployment is now (autoscale, and so the metric its
    agents scrape, is outside the template); a current spec that no longer parses leaves the
    revision's own, so one broken row never stops another deployment's publishing."""
    try:
        return with_template(specs.current(ctx, db, name), made)
    except SpecError:
        return made


def stored_models(
    db: sqlite_utils.Database, spec: DeploymentSpec | JobSpec
) -> tuple[ModelRef, ...]:
    """As model_refs, but a model gone from the store since apply is left out with no files:
    the agent refuses the entry and reports why, the other replicas go on."""
    try:
        return model_refs(db, spec)
    except SpecError:
        return tuple(ModelRef(m.name, m.digest, (), m.mount_path) for m in spec.spec.models)


def observe(
    ctx: HubContext, db: sqlite_utils.Database, deployment: str, project: str
) -> list[tuple[int, Observed]]:
    """Each replica's revision and what its agent last said about it, by ordinal."""
    seen = []
    for ordinal, host, revision, agent_id, last_seen, revoked_at, report in db.execute(
        "SELECT r.ordinal, r.host, r.revision, a.id, a.last_seen, a.revoked_at, a.report "
        "FROM deployment_replicas r JOIN hosts h ON h.name = r.host "
        "LEFT JOIN agents a ON a.id = h.agent_id WHERE r.deployment = ? ORDER BY r.ordinal",
        [deployment],
    ).fetchall():
        workloads = reported_workloads(report, agent_id)
        about = workloads.get(workload_id(project, deployment, ordinal)) or {}
        last_seen = ctx.heartbeats.last_seen(agent_id or "", last_seen)
        online = agent_id is not None and agents.liveness(ctx, last_seen, revoked_at) == "online"
        state = about.get("state")
        observed = Observed(
            ordinal,
            host,
            online,
            state,
            about.get("template_hash"),
            about.get("reason"),
            last_seen,
            about.get("load"),
        )
        seen.append((revision, observed))
    return seen


def states(ctx: HubContext, db: sqlite_utils.Database) -> dict[tuple[str, str], Counter[str]]:
    """Replica states per (deployment, project), as agents last reported them; a replica
    not reported yet is `pending`."""
    return {
        (name, project): Counter(o.state or "pending" for _, o in observe(ctx, db, name, project))
        for name, project in db.execute("SELECT name, project FROM deployments ORDER BY name")
    }
