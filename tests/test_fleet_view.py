"""What placement sees of the fleet through the hub: other deployments' ports, CPU and memory
taken, capacity read from the facts agents really send, and hosts with unreadable facts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiorch.deploy import SpecError
from aiorch.hub.context import HubContext
from aiorch.hub.services import deployment_views, deployments, enrollment, images, inventory
from edge_agent.facts import collect_facts
from edge_agent.gpu import NullBackend
from tests.fixtures_hub import fresh_csr
from tests.fixtures_policy import allow_host_paths

EMBEDDINGS = Path(__file__).parent.parent / "examples" / "deployments" / "embeddings-l40s.yaml"
L40S = {"name": "NVIDIA L40S", "memory_total_bytes": 46068 * 2**20}
IMAGE = "localhost/aiorch-model:v1"
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: {name}, project: nlp}}
spec:
  image: localhost/aiorch-model:v1
  ports: [{{containerPort: 80}}]
  resources: {{cpu: {cpu}}}
  replicas: {replicas}
"""


def facts(name: str, gpus: int = 0, cpus: int = 64) -> dict[str, Any]:
    """Facts shaped as edge_agent.facts sends them."""
    return {
        "hostname": name,
        "gpus": [{**L40S, "index": i, "simulated": False} for i in range(gpus)],
        "cpu": {"logical_count": cpus},
        "memory_total_bytes": 2**39,
        "container_runtime": "podman",
    }


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def enroll(ctx: HubContext, *hosts: dict[str, Any], labels: str = "{}") -> None:
    token = enrollment.create_token(ctx, "dc1", 3600, 10, "user:t")["token"]
    for host in hosts:
        enrollment.enroll(ctx, token, fresh_csr(), host, "1")

    def op(db: Any) -> None:
        db.execute("UPDATE hosts SET region = 'eu', labels = ?", [labels])

    ctx.store.write(op)


@pytest.fixture
def ctx(make_context: Any) -> HubContext:
    context: HubContext = make_context()
    asyncio.run(images.store(context, IMAGE, _chunks(b"archive"), "t", 1 << 20))
    return context


def placed_hosts(result: dict[str, Any]) -> list[str]:
    return sorted(r["host"] for r in result["plan"]["placed"] + result["plan"]["kept"])


def test_embeddings_example_binds_port_80_once_per_server(ctx: HubContext) -> None:
    enroll(ctx, facts("l40s-a", gpus=8), facts("l40s-b", gpus=8), labels='{"gpu": "l40s"}')
    allow_host_paths(ctx, "search", "/srv/models")
    result = deployments.plan(ctx, EMBEDDINGS.read_text())
    assert placed_hosts(result) == ["l40s-a", "l40s-b"]
    reasons = {u["reason"] for u in result["plan"]["unplaced"]}
    assert sum(u["count"] for u in result["plan"]["unplaced"]) == 2
    assert reasons == {
        "needs 1 x L40S, 4 CPU, 16 GiB memory, hostPort 80; "
        "its hostPort is in use on all 2 eligible hosts"
    }


def test_ports_of_other_deployments_keep_replicas_off_a_host(ctx: HubContext) -> None:
    enroll(ctx, facts("a"), facts("b"))
    first = deployments.apply(ctx, SPEC.format(name="web", cpu=0, replicas=1), "user:t")
    (taken,) = placed_hosts(first)
    second = deployments.plan(ctx, SPEC.format(name="api", cpu=0, replicas=2))
    assert placed_hosts(second) == sorted({"a", "b"} - {taken})
    (unplaced,) = second["plan"]["unplaced"]
    assert "hostPort 80" in unplaced["reason"] and "in use" in unplaced["reason"]


def test_cpu_of_other_deployments_counts_as_taken(ctx: HubContext) -> None:
    enroll(ctx, facts("small", cpus=8))
    web = SPEC.format(name="web", cpu=6, replicas=1).replace("Port: 80", "Port: 81")
    deployments.apply(ctx, web, "user:t")
    result = deployments.plan(ctx, SPEC.format(name="api", cpu=4, replicas=1))
    assert placed_hosts(result) == []
    (unplaced,) = result["plan"]["unplaced"]
    assert unplaced["reason"] == "needs 4 CPU, hostPort 80; at most 2 CPU free on one host"


def test_placement_reads_the_cpus_a_real_agent_reports(ctx: HubContext) -> None:
    real = {**collect_facts(NullBackend()), "hostname": socket.gethostname()}
    enroll(ctx, real)
    result = deployments.plan(ctx, SPEC.format(name="web", cpu=1, replicas=1))
    assert placed_hosts(result) == [socket.gethostname()]


def test_unreadable_stored_facts_spoil_only_their_host(ctx: HubContext) -> None:
    enroll(ctx, facts("good"), facts("bad"))

    def corrupt(db: Any) -> None:  # facts stored before the hub checked them at the door
        bad = '{"gpus": [{"index": "x"}], "memory_total_bytes": NaN, "hostname": "bad"}'
        db.execute("UPDATE hosts SET facts = ? WHERE name = 'bad'", [bad])

    ctx.store.write(corrupt)
    hosts = {h["name"]: h for h in inventory.list_hosts(ctx)}
    assert (hosts["bad"]["gpus"], hosts["good"]["gpus"]) == (0, 0)
    result = deployments.plan(ctx, SPEC.format(name="web", cpu=1, replicas=2))
    assert placed_hosts(result) == ["good"]
    assert "host bad excluded: not ready" in result["plan"]["excluded"]
    assert len(result["plan"]["unplaced"]) == 1


UNDELIVERABLE = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: odd, project: nlp}}
spec:
  image: localhost/aiorch-model:v1
  {field}
"""


@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("volumes: [{hostPath: '/data:/etc', mountPath: /data}]", "volumes.host_path"),
        ('env: {GREETING: "hi\\nEVIL=1"}', "env.GREETING"),
        ("ports: [{containerPort: 80}, {containerPort: 8080, hostPort: 80}]", "ports"),
    ],
)
def test_a_spec_the_agents_would_refuse_is_refused_at_plan_and_apply(
    ctx: HubContext, field: str, named: str
) -> None:
    enroll(ctx, facts("a"))
    text = UNDELIVERABLE.format(field=field)
    for attempt in (lambda: deployments.plan(ctx, text), lambda: deployments.apply(ctx, text, "t")):
        with pytest.raises(SpecError, match=f"an agent would refuse it: {named}"):
            attempt()
    assert deployment_views.list_deployments(ctx) == []
