"""The workload contract end to end: every example spec through placement, the hub's desired
document and the agent's parser, which must agree on what runs where and on which ports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aiorch.deploy import DeploymentSpec, Gpu, HostView, SpecError, load_spec, plan_placement
from aiorch.deploy.eligibility import Demand
from aiorch.hub.context import HubContext
from aiorch.hub.services import images, models, replicas
from edge_agent.contract.fields import ContractError
from edge_agent.contract.image import holds
from edge_agent.contract.workload import (
    Workload,
    desired_document,
    parse_workload,
    parse_workloads,
    workload_entry,
)

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "deployments").glob("*.yaml"))
DIGEST = "sha256:" + "ab" * 32


def fleet_for(spec: DeploymentSpec) -> list[HostView]:
    """One host more than the spec has replicas, each matching its selector, residency and
    GPU kind, on sites of their own (so spread: sites can place), with room for two replicas'
    GPUs, CPU and memory."""
    body = spec.spec
    res, selector = body.resources, body.placement.selector
    residency = body.placement.residency
    labels = {k: v for k, v in selector.items() if k not in ("site", "role")}
    gpu = Gpu(0, f"NVIDIA {res.gpu_product or 'L4'}", max(res.min_gpu_memory_mib or 0, 49152))
    return [
        HostView(
            name=f"host{i}",
            site=selector.get("site") or f"site{i}",
            region=residency.region[0] if residency else "eu",
            role=selector.get("role") or "any",
            labels=labels,
            gpus=tuple(Gpu(g, gpu.product, gpu.memory_mib) for g in range(2 * res.gpus)),
            free_cpu=2 * res.cpu,
            free_memory_mib=2 * res.memory_mib,
        )
        for i in range(body.replicas + 1)
    ]


def published(make_context: Any, spec: DeploymentSpec) -> dict[str, list[dict[str, Any]]]:
    """The desired document of each host, as the hub writes it from a plan of `spec` and as
    it travels to the agent (JSON)."""
    ctx: HubContext = make_context()
    plan = plan_placement(spec, fleet_for(spec))
    assert not plan.unplaced, [u.reason for u in plan.unplaced]
    stored = {"digest": DIGEST, "size": 1234}
    by_host: dict[str, list[Workload]] = {}
    for replica in plan.replicas:
        by_host.setdefault(replica.host, []).append(replicas.workload(ctx, spec, stored, replica))
    return {
        host: json.loads(json.dumps(desired_document(ws)))["workloads"]
        for host, ws in by_host.items()
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_specs_mean_the_same_to_placement_hub_and_agent(
    example: Path, make_context: Any
) -> None:
    spec = load_spec(example.read_text())
    body = spec.spec
    demand = Demand.of(spec)
    documents = published(make_context, spec)
    assert sum(len(entries) for entries in documents.values()) == body.replicas
    for entries in documents.values():
        workloads, rejected = parse_workloads({"workloads": entries})
        assert rejected == {}
        bound = Counter(
            (p.host_port, p.protocol) for w in workloads for p in w.ports
        )  # what podman binds on this host
        assert all(n == 1 for n in bound.values()), f"a host port is bound twice: {bound}"
        for w in workloads:
            assert {p.host_port for p in w.ports} == demand.host_ports
            assert [p.container_port for p in w.ports] == [p.container_port for p in body.ports]
            assert len(w.gpus) == body.resources.gpus == demand.gpus
            assert (w.image.ref, w.image.digest) == (body.image, DIGEST)
            assert (w.cpu or 0.0, w.memory_mib or 0) == (demand.cpu, demand.memory_mib)
            assert w.env == body.env and set(w.secret_env) == set(body.secret_env)
            assert [v.mount_path for v in w.volumes] == [v.mount_path for v in body.volumes]
            assert list(w.args) == body.args and list(w.command) == body.command
            check = body.health_check
            assert check is not None and w.health_check is not None
            assert (w.health_check.path, w.health_check.port) == (
                check.http_get.path,
                check.http_get.port,
            )
            assert w.health_port() in demand.host_ports
            assert workload_entry(w) == next(e for e in entries if e["id"] == w.id)


def test_the_agent_reads_back_what_the_hub_writes(make_context: Any) -> None:
    spec = load_spec(EXAMPLES[0].read_text())
    for entries in published(make_context, spec).values():
        for entry in entries:
            assert workload_entry(parse_workload(entry)) == entry


def test_agent_refuses_a_document_binding_one_host_port_twice(make_context: Any) -> None:
    spec = load_spec(EXAMPLES[0].read_text())
    entry = next(iter(published(make_context, spec).values()))[0]
    twice = {**entry, "ports": [*entry["ports"], {**entry["ports"][0], "container_port": 81}]}
    with pytest.raises(ContractError, match="publish host port 80/tcp more than once"):
        parse_workload(twice)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: {**e, "env": {"MODEL\n": "x"}}, "env"),  # a second line in the env file
        (lambda e: {**e, "deployment": "chat\n"}, "deployment"),
        (lambda e: {**e, "image": {**e["image"], "digest": e["image"]["digest"] + "\n"}}, "image"),
    ],
    ids=["env-name", "name", "digest"],
)
def test_a_trailing_newline_never_passes_a_pattern(make_context: Any, change: Any, field: str):
    spec = load_spec(EXAMPLES[0].read_text())
    entry = next(iter(published(make_context, spec).values()))[0]
    with pytest.raises(ContractError) as caught:
        parse_workload(change(entry))
    assert caught.value.field.startswith(field)


def test_a_udp_port_reaches_the_agent_as_udp(make_context: Any) -> None:
    udp_too = "- containerPort: 80\n      protocol: UDP\n    - containerPort: 80"
    spec = load_spec(EXAMPLES[0].read_text().replace("- containerPort: 80", udp_too))
    entry = next(iter(published(make_context, spec).values()))[0]
    ports = {(p.host_port, p.protocol) for p in parse_workload(entry).ports}
    assert ports == {(80, "udp"), (80, "tcp")}


def test_a_model_the_spec_names_reaches_the_agent_with_its_files(
    make_context: Any, tmp_path: Path
) -> None:
    """The hub resolves `models: [{name, digest, mountPath}]` from its store into the
    reference the agent reads: the same digest, each file with its sha256 and size."""
    ctx: HubContext = make_context()
    (tmp_path / "weights.json").write_text('{"weights": [1, 2, 3, 4]}')
    digest = models.register(ctx, "w", [("weights.json", tmp_path / "weights.json")], "user:t")
    text = (
        EXAMPLES[0]
        .read_text()
        .replace(
            "spec:\n",
            f"spec:\n  models: [{{name: w, digest: '{digest}', mountPath: /weights}}]\n",
            1,
        )
    )
    spec = load_spec(text)
    refs = replicas.model_refs(ctx.store.read(), spec)
    plan = plan_placement(spec, fleet_for(spec))
    entry = workload_entry(replicas.workload(ctx, spec, {"digest": DIGEST}, plan.replicas[0], refs))
    model = parse_workload(json.loads(json.dumps(entry))).models[0]
    assert (model.name, model.digest, model.mount_path) == ("w", digest, "/weights")
    assert [(f.path, f.size) for f in model.files] == [("weights.json", 25)]
    missing = text.replace(digest, "sha256:" + "0" * 64)
    with pytest.raises(SpecError, match=r"spec.models\[0\]: no model w@sha256:0+ in the hub"):
        replicas.model_refs(ctx.store.read(), load_spec(missing))


@pytest.mark.parametrize(
    ("ref", "tags"),
    [
        ("model", ["localhost/model:latest"]),  # no tag is :latest, for the hub as for podman
        ("docker.io/vllm/vllm-openai:v0.6.3", ["vllm/vllm-openai:v0.6.3"]),
        ("registry.local:5000/team/m:v1@sha256:" + "a" * 64, ["registry.local:5000/team/m:v1"]),
    ],
)
def test_the_agent_accepts_the_archive_of_the_image_the_hub_resolved(
    ref: str, tags: list[str]
) -> None:
    assert images.normalise(ref) == images.normalise(tags[0].replace("localhost/", ""))
    assert holds(ref, tags)


def test_the_contract_needs_only_the_standard_library() -> None:
    """The agent imports it, and keeps its small dependency set (no pydantic, no hub)."""
    probe = (
        "import sys, edge_agent.contract.workload, edge_agent.contract.facts, "
        "edge_agent.contract.image, edge_agent.contract.telemetry, edge_agent.contract.model; "
        "print(*{m.split('.')[0] for m in sys.modules if not m.startswith('_')})"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    third_party = set(out.stdout.split()) - set(sys.stdlib_module_names)
    assert third_party == {"edge_agent"}
