"""Placement: constraints honoured, reasons a person understands, deterministic, no churn."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiorch.deploy.eligibility import EPSILON
from aiorch.deploy.hosts import Gpu, HostView, Replica
from aiorch.deploy.placement import Plan, plan_placement
from aiorch.deploy.spec import DeploymentSpec, parse_spec

H100 = ("NVIDIA H100 80GB HBM3", 81559)
A100_40 = ("NVIDIA A100-SXM4-40GB", 40960)
L40S = ("NVIDIA L40S", 46068)


def deployment(replicas: int = 1, **spec: Any) -> DeploymentSpec:
    return parse_spec(
        {
            "apiVersion": "aiorch.dev/v1",
            "kind": "Deployment",
            "metadata": {"name": "llm", "project": "nlp"},
            "spec": {"image": "registry.local/vllm:1", "replicas": replicas, **spec},
        }
    )


def host(
    name: str,
    site: str = "dc1",
    *,
    gpus: int = 8,
    kind: tuple[str, int] = H100,
    region: str = "eu",
    role: str = "gpu-server",
    **fields: Any,
) -> HostView:
    return HostView(
        name=name,
        site=site,
        region=region,
        role=role,
        gpus=tuple(Gpu(i, *kind) for i in range(gpus)),
        free_cpu=fields.pop("free_cpu", 64.0),
        free_memory_mib=fields.pop("free_memory_mib", 512 * 1024),
        **fields,
    )


def hosts_of(plan: Plan) -> list[str]:
    return [r.host for r in plan.replicas]


def test_selector_picks_only_matching_hosts() -> None:
    fleet = [host("a", role="edge"), host("b"), host("c", labels={"tier": "gold"})]
    spec = deployment(3, placement={"selector": {"role": "gpu-server", "tier": "gold"}})
    plan = plan_placement(spec, fleet)
    assert hosts_of(plan) == ["c", "c", "c"]
    by_host = deployment(1, placement={"selector": {"host": "b"}})
    assert hosts_of(plan_placement(by_host, fleet)) == ["b"]


def test_residency_keeps_replicas_in_the_region() -> None:
    fleet = [
        host("eu-1", region="eu", gpus=1),
        host("us-1", region="us"),
        host("us-2", region="us"),
    ]
    spec = deployment(3, resources={"gpus": 1}, placement={"residency": {"region": ["eu"]}})
    plan = plan_placement(spec, fleet)
    assert hosts_of(plan) == ["eu-1"]
    assert [u.ordinal for u in plan.unplaced] == [1, 2]
    assert plan.unplaced[0].reason == "needs 1 x GPU; site dc1 has 0 free"


def test_policy_regions_narrow_residency_further() -> None:
    fleet = [host("eu-1", region="eu"), host("us-1", region="us")]
    spec = deployment(2, placement={"residency": {"region": ["eu", "us"]}})
    assert set(hosts_of(plan_placement(spec, fleet))) == {"eu-1", "us-1"}
    assert hosts_of(plan_placement(spec, fleet, regions=frozenset({"us"}))) == ["us-1", "us-1"]
    nowhere = plan_placement(spec, fleet, regions=frozenset())
    assert [u.reason for u in nowhere.unplaced] == ["no host in region (none allowed)"] * 2


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [(3, {"a": 1, "b": 1, "c": 1}), (5, {"a": 2, "b": 2, "c": 1})],
)
def test_spread_hosts_one_per_host_while_possible(replicas: int, expected: dict[str, int]) -> None:
    spec = deployment(replicas, resources={"gpus": 1})
    plan = plan_placement(spec, [host("c"), host("a"), host("b")])
    assert Counter(hosts_of(plan)) == expected


def test_spread_sites_round_robin() -> None:
    fleet = [host(f"dc1-{i}", "dc1") for i in range(3)] + [
        host("edge1-1", "edge1"),
        host("edge2-1", "edge2"),
    ]
    plan = plan_placement(
        deployment(6, resources={"gpus": 1}, placement={"spread": "sites"}), fleet
    )
    sites = Counter(r.host.split("-")[0] for r in plan.replicas)
    assert sites == {"dc1": 2, "edge1": 2, "edge2": 2}
    assert Counter(r.host for r in plan.replicas if r.host.startswith("dc1")) == {
        "dc1-0": 1,
        "dc1-1": 1,
    }


def test_spread_none_packs_the_tightest_host() -> None:
    fleet = [host("big", gpus=8), host("half", gpus=8, allocated_gpus=frozenset(range(4)))]
    plan = plan_placement(deployment(4, resources={"gpus": 1}, placement={"spread": "none"}), fleet)
    assert hosts_of(plan) == ["half"] * 4
    assert [r.gpus for r in plan.replicas] == [(4,), (5,), (6,), (7,)]


def test_gpu_product_and_memory() -> None:
    fleet = [
        host("a100", kind=A100_40),
        host("l40s", kind=L40S),
        host("h100", kind=H100, allocated_gpus=frozenset({0, 2})),
    ]
    spec = deployment(1, resources={"gpus": 2, "gpuProduct": "h100", "minGpuMemoryMiB": 80000})
    plan = plan_placement(spec, fleet)
    assert plan.replicas == (Replica(0, "h100", (1, 3)),)
    too_big = deployment(1, resources={"gpus": 1, "gpuProduct": "H100", "minGpuMemoryMiB": 81920})
    assert plan_placement(too_big, fleet).unplaced[0].reason == (
        "needs 1 x H100 (>= 80 GiB) on one host; no healthy host has more than 0 (a100, h100, l40s)"
    )


def test_cpu_and_memory_are_honoured() -> None:
    fleet = [host("small", free_cpu=3.0), host("roomy", free_cpu=9.0, free_memory_mib=8192)]
    spec = deployment(3, resources={"cpu": 4, "memoryMiB": 4096})
    plan = plan_placement(spec, fleet)
    assert hosts_of(plan) == ["roomy", "roomy"]
    assert plan.unplaced[0].reason == ("needs 4 CPU, 4 GiB memory; at most 3 CPU free on one host")


def test_unhealthy_hosts_are_excluded_with_reasons() -> None:
    fleet = [
        host("dc1-1", online=False),
        host("dc1-2", drifted=True),
        host("dc1-3", ready=False),
        host("dc1-4"),
    ]
    plan = plan_placement(deployment(1), fleet)
    assert hosts_of(plan) == ["dc1-4"]
    assert [str(e) for e in plan.excluded] == [
        "host dc1-1 excluded: offline",
        "host dc1-2 excluded: drifted",
        "host dc1-3 excluded: not ready",
    ]
    everything_down = plan_placement(deployment(1), fleet[:3])
    assert everything_down.unplaced[0].reason == (
        "every host is excluded: dc1-1 offline, dc1-2 drifted, dc1-3 not ready"
    )


def test_replica_on_an_offline_or_drifted_host_stays_and_gets_no_company() -> None:
    fleet = [host("dc1-1", online=False), host("dc1-2", drifted=True), host("dc1-3")]
    current = [Replica(0, "dc1-1", (0,)), Replica(1, "dc1-2", (0,))]
    plan = plan_placement(deployment(3, resources={"gpus": 1}), fleet, current)
    assert plan.kept == tuple(current) and not plan.moved and not plan.removed
    assert [(r.ordinal, r.host) for r in plan.placed] == [(2, "dc1-3")]


def test_replica_on_a_host_gone_from_the_inventory_moves() -> None:
    current = [Replica(0, "dc1-9", (0,))]
    plan = plan_placement(deployment(1, resources={"gpus": 1}), [host("dc1-2")], current)
    assert [(m.previous.host, m.replica.host, m.reason) for m in plan.moved] == [
        ("dc1-9", "dc1-2", "host dc1-9 is gone")
    ]


@pytest.mark.parametrize(
    ("fleet", "spec", "reason"),
    [
        (
            [
                host("edge1-1", "edge1", gpus=2, allocated_gpus=frozenset({1})),
                host("edge1-2", "edge1", gpus=2, allocated_gpus=frozenset({0})),
            ],
            deployment(
                1, resources={"gpus": 2, "gpuProduct": "H100", "minGpuMemoryMiB": 81920 - 512}
            ),
            "needs 2 x H100 (>= 79.5 GiB); site edge1 has 2 free but at most 1 on one host",
        ),
        (
            [host("edge1-1", "edge1", gpus=1)],
            deployment(1, resources={"gpus": 1}, placement={"residency": {"region": ["eu"]}}),
            None,
        ),
        (
            [host("us-1", region="us")],
            deployment(1, placement={"residency": {"region": ["eu"]}}),
            "no host in region eu",
        ),
        (
            [host("eu-1", role="edge"), host("us-1", region="us")],
            deployment(
                1, placement={"selector": {"role": "gpu-server"}, "residency": {"region": ["eu"]}}
            ),
            "no host in region eu matches selector role=gpu-server",
        ),
        ([], deployment(1), "the inventory has no hosts"),
    ],
)
def test_unplaced_reasons(fleet: list[HostView], spec: DeploymentSpec, reason: str | None) -> None:
    plan = plan_placement(spec, fleet)
    assert [u.reason for u in plan.unplaced] == ([reason] if reason else [])


def test_the_brief_example_reason() -> None:
    h100 = ("NVIDIA H100 80GB HBM3", 81920)
    fleet = [host("edge1-box-01", "edge1", gpus=2, kind=h100, allocated_gpus=frozenset({1}))]
    spec = deployment(1, resources={"gpus": 2, "gpuProduct": "H100", "minGpuMemoryMiB": 81920})
    reason = plan_placement(spec, fleet).unplaced[0].reason
    assert reason == "needs 2 x H100 (>= 80 GiB); site edge1 has 1 free"


def test_too_few_gpus_of_the_kind_names_the_best_hosts() -> None:
    fleet = [host("edge1-1", "edge1", gpus=1), host("edge1-2", "edge1", gpus=0), host("dc1-1")]
    spec = deployment(
        1, resources={"gpus": 2, "gpuProduct": "H100"}, placement={"selector": {"site": "edge1"}}
    )
    assert plan_placement(spec, fleet).unplaced[0].reason == (
        "needs 2 x H100 on one host; no healthy host matching selector site=edge1 has more than 1"
        " (edge1-1)"
    )


def test_host_ports_keep_replicas_apart() -> None:
    spec = deployment(
        3, ports=[{"containerPort": 8000, "hostPort": 8000}], placement={"spread": "none"}
    )
    fleet = [host("a"), host("b", used_host_ports=frozenset({8000})), host("c")]
    plan = plan_placement(spec, fleet)
    assert hosts_of(plan) == ["a", "c"]
    assert (
        plan.unplaced[0].reason
        == "needs hostPort 8000; its hostPort is in use on all 3 eligible hosts"
    )


def test_a_container_port_without_host_port_binds_its_own_number() -> None:
    spec = deployment(3, ports=[{"containerPort": 80}], placement={"spread": "none"})
    fleet = [host("a"), host("b", used_host_ports=frozenset({80}))]
    plan = plan_placement(spec, fleet)
    assert hosts_of(plan) == ["a"]
    assert [u.reason for u in plan.unplaced] == [
        "needs hostPort 80; its hostPort is in use on all 2 eligible hosts"
    ] * 2


def test_plan_is_deterministic() -> None:
    fleet = [host(f"h{i}", f"s{i % 3}", gpus=4) for i in range(12)]
    current = [Replica(0, "h4", (0,)), Replica(3, "h7", (2,))]
    spec = deployment(9, resources={"gpus": 1}, placement={"spread": "sites"})
    first = plan_placement(spec, fleet, current)
    for seed in range(5):
        rng = random.Random(seed)
        shuffled, cur = fleet[:], current[:]
        rng.shuffle(shuffled)
        rng.shuffle(cur)
        assert plan_placement(spec, shuffled, cur) == first


def test_applying_twice_moves_nothing() -> None:
    fleet = [host(f"h{i}", f"s{i % 2}", gpus=2) for i in range(4)]
    spec = deployment(7, resources={"gpus": 1}, placement={"spread": "sites"})
    plan = plan_placement(spec, fleet)
    again = plan_placement(spec, fleet, plan.replicas)
    assert not again.changed
    assert again.kept == plan.replicas
    assert [u.ordinal for u in again.unplaced] == [u.ordinal for u in plan.unplaced]


def test_scale_up_keeps_existing_and_adds_lowest_ordinals() -> None:
    fleet = [host("a"), host("b"), host("c")]
    current = [Replica(0, "a", (0,)), Replica(2, "b", (0,))]
    plan = plan_placement(deployment(4, resources={"gpus": 1}), fleet, current)
    assert plan.kept == tuple(current)
    assert plan.placed == (Replica(1, "c", (0,)), Replica(3, "a", (1,)))


def test_scale_down_removes_from_the_most_crowded_first() -> None:
    fleet = [host("a", "s1"), host("b", "s1"), host("c", "s2")]
    current = [Replica(0, "a"), Replica(1, "c"), Replica(2, "a"), Replica(3, "b"), Replica(4, "c")]
    by_host = plan_placement(deployment(3), fleet, current)
    assert sorted(r.replica.ordinal for r in by_host.removed) == [2, 4]
    assert {r.reason for r in by_host.removed} == {"scaled down to 3 replicas"}
    by_site = plan_placement(deployment(3, placement={"spread": "sites"}), fleet, current)
    assert sorted(r.replica.ordinal for r in by_site.removed) == [2, 4]
    plain = plan_placement(deployment(3, placement={"spread": "none"}), fleet, current)
    assert sorted(r.replica.ordinal for r in plain.removed) == [3, 4]


def test_scale_down_drops_displaced_replicas_first() -> None:
    fleet = [host("a"), host("b", drifted=True)]
    current = [Replica(0, "a"), Replica(1, "b"), Replica(2, "a")]
    plan = plan_placement(deployment(2), fleet, current)
    assert [(r.replica.ordinal, r.reason) for r in plan.removed] == [
        (1, "host b excluded: drifted; scaled down to 2 replicas")
    ]
    assert not plan.moved and not plan.placed


def test_replicas_whose_gpus_were_taken_move() -> None:
    fleet = [host("a", gpus=2, allocated_gpus=frozenset({0}))]
    current = [Replica(0, "a", (0,)), Replica(1, "a", (1,)), Replica(2, "a", (1,))]
    plan = plan_placement(deployment(3, resources={"gpus": 1}), fleet, current)
    assert plan.kept == (Replica(1, "a", (1,)),)
    assert [m.reason for m in plan.removed] == [
        "GPU 0 on a is allocated to another workload; nowhere else to go",
        "GPU 1 on a is also held by another replica; nowhere else to go",
    ]


def test_duplicate_hosts_or_ordinals_are_a_bug() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        plan_placement(deployment(1), [host("a"), host("a")])
    with pytest.raises(ValueError, match="listed twice"):
        plan_placement(deployment(1), [host("a")], [Replica(0, "a"), Replica(0, "a")])


KINDS = [H100, A100_40, L40S]


HOST_DRAWS = st.fixed_dictionaries(
    {
        "site": st.sampled_from(["dc1", "edge1", "edge2"]),
        "region": st.sampled_from(["eu", "us"]),
        "role": st.sampled_from(["gpu-server", "edge"]),
        "online": st.sampled_from([True, True, True, False]),
        "ready": st.sampled_from([True, True, True, False]),
        "drifted": st.sampled_from([False, False, False, True]),
        "gpus": st.tuples(st.integers(0, 4), st.sampled_from(KINDS)),
        "allocated_gpus": st.frozensets(st.integers(0, 3)),
        "free_cpu": st.sampled_from([0.0, 1.5, 4.0, 16.0]),
        "free_memory_mib": st.sampled_from([0, 2048, 65536]),
        "used_host_ports": st.sampled_from([frozenset(), frozenset({8000}), frozenset({9000})]),
    }
)


def _host(i: int, fields: dict[str, Any]) -> HostView:
    count, kind = fields.pop("gpus")
    return HostView(name=f"h{i}", gpus=tuple(Gpu(g, *kind) for g in range(count)), **fields)


fleets = st.lists(HOST_DRAWS, max_size=12).map(lambda hs: [_host(i, h) for i, h in enumerate(hs)])


SPEC_DRAWS = st.fixed_dictionaries(
    {
        "replicas": st.integers(0, 10),
        "gpus": st.integers(0, 3),
        "gpuProduct": st.sampled_from([None, "H100", "a100", "l40"]),
        "minGpuMemoryMiB": st.sampled_from([None, 45000, 80000]),
        "cpu": st.sampled_from([0, 0.5, 4]),
        "memoryMiB": st.sampled_from([0, 1024]),
        "spread": st.sampled_from(["hosts", "sites", "none"]),
        "selector": st.sampled_from([{}, {"role": "gpu-server"}, {"role": "edge"}]),
        "residency": st.sampled_from([None, {"region": ["eu"]}, {"region": ["us"]}]),
        "ports": st.sampled_from(
            [[], [{"containerPort": 80, "hostPort": 8000}], [{"containerPort": 8000}]]
        ),
    }
)


def _spec(d: dict[str, Any]) -> DeploymentSpec:
    resources = {"gpus": d["gpus"], "cpu": d["cpu"], "memoryMiB": d["memoryMiB"]}
    if d["gpus"]:
        product, memory = d["gpuProduct"], d["minGpuMemoryMiB"]
        resources |= {"gpuProduct": product} if product else {}
        resources |= {"minGpuMemoryMiB": memory} if memory else {}
    placement = {"spread": d["spread"], "selector": d["selector"]}
    if d["residency"]:
        placement["residency"] = d["residency"]
    return deployment(d["replicas"], resources=resources, placement=placement, ports=d["ports"])


specs = SPEC_DRAWS.map(_spec)
# Current replicas as (host number, GPU indices): any host, any GPUs, conflicts included.
currents = st.lists(
    st.tuples(st.integers(0, 11), st.lists(st.integers(0, 3), max_size=3)), max_size=6
)


def assert_valid(plan: Plan, spec: DeploymentSpec, fleet: list[HostView]) -> None:
    by_name = {h.name: h for h in fleet}
    res = spec.spec.resources
    selector = spec.spec.placement.selector
    residency = spec.spec.placement.residency
    # What `podman run --publish` binds on the host: the hostPort, or the containerPort's own
    # number when the spec gives none (podman needs a host port for every published port).
    ports = {p.container_port if p.host_port is None else p.host_port for p in spec.spec.ports}
    used: Counter[tuple[str, int]] = Counter()
    per_host: Counter[str] = Counter()
    for replica in plan.replicas:
        h = by_name[replica.host]
        assert (h.online and h.ready and not h.drifted) or replica in plan.kept
        assert all(h.label(k) == v for k, v in selector.items())
        assert residency is None or h.region in residency.region
        assert len(replica.gpus) == res.gpus
        gpus = {g.index: g for g in h.gpus}
        for index in replica.gpus:
            gpu = gpus[index]
            assert index not in h.allocated_gpus
            assert res.gpu_product is None or res.gpu_product.lower() in gpu.product.lower()
            assert res.min_gpu_memory_mib is None or gpu.memory_mib >= res.min_gpu_memory_mib
            used[(h.name, index)] += 1
        per_host[h.name] += 1
        assert not ports & h.used_host_ports
    assert all(n == 1 for n in used.values()), "a GPU is allocated twice"
    for name, n in per_host.items():
        h = by_name[name]
        assert n * res.cpu <= h.free_cpu + EPSILON
        assert n * res.memory_mib <= h.free_memory_mib
        assert not ports or n == 1
    assert len(plan.replicas) + len(plan.unplaced) == spec.spec.replicas
    assert all(u.reason for u in plan.unplaced)


@settings(max_examples=150, deadline=None)
@given(fleet=fleets, spec=specs, drawn=currents)
def test_every_placed_replica_satisfies_every_constraint(
    fleet: list[HostView], spec: DeploymentSpec, drawn: list[tuple[int, list[int]]]
) -> None:
    current = [Replica(i, f"h{h}", tuple(gpus)) for i, (h, gpus) in enumerate(drawn)]
    plan = plan_placement(spec, fleet, current)
    assert_valid(plan, spec, fleet)
    accounted = [r.ordinal for r in plan.kept] + [m.previous.ordinal for m in plan.moved]
    accounted += [r.replica.ordinal for r in plan.removed]
    assert sorted(accounted) == [r.ordinal for r in current]  # each kept, moved or removed once
    again = plan_placement(spec, fleet, plan.replicas)
    assert not again.changed
    assert again.replicas == plan.replicas
