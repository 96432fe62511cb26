"""The hub's autoscaling pass over a real store: agents check in (the protocol's own
`agents.checkin`) with the load of their replicas, and the pass scales the deployment through
apply's placement, audited, within its delays, holding its count when agents go quiet."""

from __future__ import annotations

import asyncio

import pytest

from aiorch.hub.context import HubContext
from aiorch.hub.schemas import CheckinRequest
from aiorch.hub.services import (
    agents,
    audit,
    autoscaling,
    deployment_views,
    deployments,
    enrollment,
    images,
    rollouts,
    specs,
)
from tests.fixtures_hub import fresh_csr
from tests.test_rollouts import _chunks

METRIC = "aiorch_model_requests_in_flight"
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: web, project: lab}}
spec:
  image: localhost/aiorch-model:v1
  ports: [{{containerPort: 8080, hostPort: 18080}}]
  replicas: {replicas}
  autoscale: {{min: 1, max: {max}, metric: {metric}, target: 2, port: 8080,
              upDelaySeconds: 30, downDelaySeconds: 60}}
"""
HOSTS = ("edge1-1", "edge2-1", "edge3-1")


def spec(replicas: int = 1, max: int = 3) -> str:
    return SPEC.format(replicas=replicas, max=max, metric=METRIC)


@pytest.fixture
def ctx(make_context) -> HubContext:
    context = make_context()
    for host in HOSTS:
        token = enrollment.create_token(context, host.split("-")[0], 3600, 1, "user:t")["token"]
        facts = {"hostname": host, "cpu": {"logical_count": 4}, "memory_total_bytes": 2**33}
        enrollment.enroll(context, token, fresh_csr(), facts, "1")
    ref = "localhost/aiorch-model:v1"
    asyncio.run(images.store(context, ref, _chunks(b"v1"), "t", 1 << 20))
    return context


def _agent(ctx: HubContext, host: str) -> str:
    db = ctx.store.read()
    return str(db.execute("SELECT agent_id FROM hosts WHERE name = ?", [host]).fetchone()[0])


def check_in(ctx: HubContext, load: float | None, hosts: tuple[str, ...] = HOSTS) -> None:
    """Each agent on `hosts` checks in, its replicas healthy with `load` each (None: no
    value yet, as while a replica starts); the heartbeats are then flushed to the store."""
    for host in hosts:
        agent_id = _agent(ctx, host)
        desired = agents.get_desired(ctx, agent_id)
        workloads = {}
        for w in desired["document"]["workloads"]:
            about = {"state": "healthy", "template_hash": w["template_hash"]}
            workloads[w["id"]] = about if load is None else {**about, "load": load}
        body = CheckinRequest.model_validate(
            {"agent_version": "1", "uptime_s": 1, "facts_hash": "f",
             "applied_revision": desired["revision"], "report": {"workloads": workloads}}
        )  # fmt: skip
        asyncio.run(agents.checkin(ctx, agent_id, body, None))
    ctx.heartbeats.flush(ctx.store)


def hosts_of(ctx: HubContext) -> list[str]:
    return sorted(r["host"] for r in rollouts.status(ctx, "web")["replicas"])


def scalings(ctx: HubContext) -> list[dict]:
    entries = audit.list_entries(ctx, action="deployment.autoscale")
    return [e["detail"] for e in reversed(entries)]


def test_load_scales_up_after_the_delay_and_down_after_the_other(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    (first,) = hosts_of(ctx)
    entry_before = agents.get_desired(ctx, _agent(ctx, first))["document"]["workloads"][0]
    assert entry_before["metric"] == {"name": METRIC, "port": 8080, "path": "/metrics"}
    check_in(ctx, 5.0)  # 5 in flight over target 2: 3 replicas
    assert autoscaling.autoscale(ctx) is None  # wanted, not for 30 s yet
    shown = deployment_views.show(ctx, "web")["autoscale"]
    assert (shown["replicas"], shown["load"], shown["desired"], shown["wanted"]) == (1, 5, 3, 3)
    assert shown["since"] == ctx.clock() and shown["complete"] is True
    ctx.clock.now += 29  # type: ignore[attr-defined]
    check_in(ctx, 5.0)
    assert autoscaling.autoscale(ctx) is None
    ctx.clock.now += 1  # type: ignore[attr-defined]
    check_in(ctx, 5.0)
    assert autoscaling.autoscale(ctx) == "web: 1 -> 3 replicas (load 5.0)"
    assert hosts_of(ctx) == sorted(HOSTS)
    assert scalings(ctx)[-1] == {"from": 1, "to": 3, "load": 5.0, "replicas": 3,
                                 "unplaced": 0, "revision": 1}  # fmt: skip
    # Same template: no rollout, and the replica that ran keeps running as it was.
    assert rollouts.status(ctx, "web")["rollout"] is None
    assert agents.get_desired(ctx, _agent(ctx, first))["document"]["workloads"] == [entry_before]
    # The new replicas are starting: no value yet, so the idle first one is no reason to go.
    check_in(ctx, 0.0, (first,))
    check_in(ctx, None, tuple(h for h in HOSTS if h != first))
    ctx.clock.now += 120  # type: ignore[attr-defined]
    check_in(ctx, None, tuple(h for h in HOSTS if h != first))
    check_in(ctx, 0.0, (first,))
    assert autoscaling.autoscale(ctx) is None
    assert deployment_views.show(ctx, "web")["autoscale"]["complete"] is False
    # All three report, idle: down to min once the down delay has passed.
    check_in(ctx, 0.0)
    assert autoscaling.autoscale(ctx) is None
    ctx.clock.now += 60  # type: ignore[attr-defined]
    check_in(ctx, 0.0)
    assert autoscaling.autoscale(ctx) == "web: 3 -> 1 replicas (load 0.0)"
    assert len(hosts_of(ctx)) == 1 and scalings(ctx)[-1]["to"] == 1


def test_a_site_cut_off_holds_its_count(ctx: HubContext):
    deployments.apply(ctx, spec(replicas=3), "user:t")
    check_in(ctx, 0.0)
    assert autoscaling.autoscale(ctx) is None  # down wanted, waiting
    # edge3 goes quiet until it counts as offline: its replica's load is unknown now, so no
    # scaling down, however long that lasts.
    ctx.clock.now += ctx.settings.offline_after_s + 1  # type: ignore[attr-defined]
    for _ in range(5):
        check_in(ctx, 0.0, HOSTS[:2])
        assert autoscaling.autoscale(ctx) is None
        ctx.clock.now += 60  # type: ignore[attr-defined]
    assert hosts_of(ctx) == sorted(HOSTS)
    assert deployment_views.show(ctx, "web")["autoscale"]["complete"] is False
    # Every agent away: nothing reported, the count holds.
    ctx.clock.now += 3600  # type: ignore[attr-defined]
    assert autoscaling.autoscale(ctx) is None and len(hosts_of(ctx)) == 3
    assert deployment_views.show(ctx, "web")["autoscale"]["load"] is None
    assert scalings(ctx) == []
    # Back: once every replica reports again, the down delay starts from then.
    check_in(ctx, 0.0)
    assert autoscaling.autoscale(ctx) is None
    ctx.clock.now += 60  # type: ignore[attr-defined]
    check_in(ctx, 0.0)
    assert autoscaling.autoscale(ctx) == "web: 3 -> 1 replicas (load 0.0)"


def test_scaling_up_stops_at_what_placement_can_fit(ctx: HubContext):
    deployments.apply(ctx, spec(max=10), "user:t")
    check_in(ctx, 100.0)
    assert autoscaling.autoscale(ctx) is None
    ctx.clock.now += 30  # type: ignore[attr-defined]
    check_in(ctx, 100.0)
    # 50 replicas wanted, 10 allowed; one host port 18080 per host, three hosts.
    assert autoscaling.autoscale(ctx) == "web: 1 -> 3 replicas (load 100.0)"
    assert deployment_views.show(ctx, "web")["autoscale"]["desired"] == 3
    assert rollouts.status(ctx, "web")["replicas"] and hosts_of(ctx) == sorted(HOSTS)


def test_an_apply_meanwhile_wins_over_a_stale_decision(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    check_in(ctx, 5.0)
    autoscaling.autoscale(ctx)
    ctx.clock.now += 30  # type: ignore[attr-defined]
    check_in(ctx, 5.0)
    stale = specs.current(ctx, ctx.store.read(), "web")
    deployments.apply(ctx, spec(replicas=2), "user:t")  # the operator's own change
    assert deployments.rescale(ctx, stale, 3, "hub:autoscaler", {}) is None
    assert len(hosts_of(ctx)) == 2


def test_autoscale_state_goes_with_autoscale_and_with_the_deployment(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    check_in(ctx, 5.0)
    autoscaling.autoscale(ctx)
    plain = spec().split("  autoscale:")[0]
    deployments.apply(ctx, plain, "user:t")
    assert autoscaling.autoscale(ctx) is None
    assert autoscaling.stored_state(ctx.store.read(), "web") is None
    assert "autoscale" not in deployment_views.show(ctx, "web")
    deployments.apply(ctx, spec(), "user:t")
    check_in(ctx, 5.0)
    autoscaling.autoscale(ctx)
    assert autoscaling.stored_state(ctx.store.read(), "web")["since"] == ctx.clock()
    deployments.delete(ctx, "web", "user:t")
    assert autoscaling.stored_state(ctx.store.read(), "web") is None
    assert autoscaling.autoscale(ctx) is None
