"""The job queue's scheduling pass: order, fit, quotas and budgets, policy, the reasons a job
waits, preemption, and (hypothesis) that no pass double-books a GPU or overspends a project."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiorch.deploy.eligibility import Demand
from aiorch.deploy.hosts import Gpu, HostView
from aiorch.jobs import states
from aiorch.jobs.queue import Allowance, Decisions, Running, Waiting, job_demand, schedule
from aiorch.jobs.spec import parse_job

H100 = ("NVIDIA H100 80GB HBM3", 81559)
L40S = ("NVIDIA L40S", 46068)


def host(name: str, n: int = 8, kind: tuple[str, int] = H100, busy=(), **kw) -> HostView:
    return HostView(
        name=name,
        gpus=tuple(Gpu(i, kind[0], kind[1]) for i in range(n)),
        allocated_gpus=frozenset(busy),
        free_cpu=kw.pop("free_cpu", 64.0),
        free_memory_mib=kw.pop("free_memory_mib", 512 * 1024),
        **kw,
    )


def job(job_id: int, gpus: int = 1, priority: int = 50, project: str = "nlp", **kw) -> Waiting:
    demand = kw.pop("demand", Demand(gpus=gpus))
    return Waiting(
        job_id=job_id,
        project=project,
        priority=priority,
        submitted_at=kw.pop("submitted_at", float(job_id)),
        demand=demand,
        gpu_seconds=kw.pop("gpu_seconds", 3600.0 * demand.gpus),
        **kw,
    )


def attempt(job_id: int, host: str, gpus, priority: int = 10, **kw) -> Running:
    return Running(
        job_id=job_id,
        project=kw.pop("project", "batch"),
        priority=priority,
        preemptible=kw.pop("preemptible", True),
        host=host,
        gpus=tuple(gpus),
        **kw,
    )


def placed(decisions: Decisions) -> dict[int, tuple[str, tuple[int, ...]]]:
    return {p.job_id: (p.host, p.gpus) for p in decisions.placed}


def test_higher_priority_first_then_older_when_only_one_fits():
    hosts = [host("a", 2)]
    jobs = [job(1, 2, priority=50), job(2, 2, priority=90, submitted_at=9), job(3, 2, priority=90)]
    decisions = schedule(jobs, hosts, {})
    assert placed(decisions) == {3: ("a", (0, 1))}, "priority 90, then the older of the two"
    assert set(decisions.waiting) == {1, 2}


def test_a_big_job_that_does_not_fit_never_holds_back_smaller_ones_behind_it():
    hosts = [host("a", 8, busy=range(4)), host("b", 8, busy=range(6))]
    jobs = [job(1, 8, priority=90), job(2, 2, priority=10), job(3, 4, priority=10)]
    decisions = schedule(jobs, hosts, {})
    assert placed(decisions) == {2: ("b", (6, 7)), 3: ("a", (4, 5, 6, 7))}
    assert decisions.waiting[1].startswith("no host has 8 x GPU free: 2 hosts busy")


def test_tightest_fit_keeps_big_hosts_whole_for_big_jobs():
    hosts = [host("big", 8), host("small", 2), host("mid", 4, busy=[0])]
    decisions = schedule([job(1, 1), job(2, 2), job(3, 8)], hosts, {})
    assert placed(decisions) == {
        1: ("small", (0,)),
        2: ("mid", (1, 2)),
        3: ("big", tuple(range(8))),
    }


def test_allocated_gpus_are_never_handed_out():
    hosts = [host("a", 4, busy=[0, 2])]
    decisions = schedule([job(1, 1), job(2, 1), job(3, 1)], hosts, {})
    assert placed(decisions) == {1: ("a", (1,)), 2: ("a", (3,))}
    assert "at most 0 x GPU free on one" in decisions.waiting[3]


def test_quota_reason_says_which_limit_and_by_how_much():
    decisions = schedule([job(1, 4)], [host("a")], {"nlp": Allowance(gpus=3)})
    assert decisions.waiting == {1: "project nlp GPU quota: 3 GPU(s) left, needs 4 (1 over)"}


def test_budget_reason_says_which_limit_and_by_how_much():
    over = job(1, 2, gpu_seconds=2 * 3600 * 10)  # 2 GPUs x 10 h
    decisions = schedule([over], [host("a")], {"nlp": Allowance(gpu_seconds=3600 * 12.5)})
    assert decisions.waiting == {1: "project nlp GPU-hour budget: 12.5 left, needs 20 (7.5 over)"}


def test_earlier_jobs_spend_the_allowance_and_other_projects_go_on():
    jobs = [
        job(1, 2, priority=90),
        job(2, 2, priority=80),
        job(3, 1, priority=70),
        job(4, 2, priority=60, project="cv"),
    ]
    decisions = schedule(jobs, [host("a")], {"nlp": Allowance(gpus=3), "cv": Allowance(gpus=2)})
    assert set(placed(decisions)) == {1, 3, 4}
    assert decisions.waiting == {2: "project nlp GPU quota: 1 GPU(s) left, needs 2 (1 over)"}


def test_policy_hosts_are_the_only_ones_used_and_the_reason_counts_the_rest():
    hosts = [host("a", 2), host("b", 8), host("c", 8)]
    decisions = schedule(
        [job(1, 2, hosts=frozenset({"b"})), job(2, 8, hosts=frozenset({"a"}))], hosts, {}
    )
    assert placed(decisions) == {1: ("b", (0, 1))}
    assert decisions.waiting[2] == (
        "no host has 8 x GPU free: 1 host with fewer than 8 x GPU (2: a); "
        "2 hosts outside those project nlp may use"
    )


def test_residency_and_selector_from_the_spec_narrow_the_hosts():
    spec = parse_job(
        {
            "apiVersion": "aiorch.dev/v1",
            "kind": "Job",
            "metadata": {"name": "ft", "project": "nlp"},
            "spec": {
                "image": "registry.local/train:1",
                "maxDuration": "1h",
                "resources": {"gpus": 2},
                "placement": {"selector": {"rack": "r1"}, "residency": {"region": ["eu"]}},
            },
        }
    )
    hosts = [
        host("us1", region="us", labels={"rack": "r1"}),
        host("eu-r2", region="eu", labels={"rack": "r2"}),
        host("eu-r1", region="eu", labels={"rack": "r1"}, busy=range(7)),
    ]
    decisions = schedule([job(1, demand=job_demand(spec))], hosts, {})
    assert decisions.waiting[1] == (
        "no host has 2 x GPU free: 1 host busy (at most 1 x GPU free on one); "
        "1 host not matching selector rack=r1; 1 host outside residency eu"
    )
    hosts[2] = host("eu-r1", region="eu", labels={"rack": "r1"}, busy=range(6))
    assert placed(schedule([job(1, demand=job_demand(spec))], hosts, {})) == {1: ("eu-r1", (6, 7))}


def test_gpu_product_and_memory_must_match():
    hosts = [host("l40s", 8, kind=L40S), host("h100", 2), host("sick", 8, online=False)]
    big = Demand(gpus=4, gpu_product="H100", min_gpu_memory_mib=80_000)
    decisions = schedule(
        [job(1, demand=Demand(gpus=2, min_gpu_memory_mib=60 * 1024)), job(2, demand=big)],
        hosts,
        {},
    )
    assert placed(decisions) == {1: ("h100", (0, 1))}
    assert decisions.waiting[2] == (
        "no host has 4 x H100 (>= 78.1 GiB) free: 1 host with fewer than 4 x H100 "
        "(>= 78.1 GiB) (2: h100); 1 host without H100 (>= 78.1 GiB); 1 host excluded: sick offline"
    )


def test_a_host_with_the_gpus_but_short_of_cpu_or_memory_is_named_so():
    hosts = [host("a", 8, free_cpu=4.0, free_memory_mib=8192)]
    decisions = schedule([job(1, demand=Demand(gpus=1, cpu=8))], hosts, {})
    assert decisions.waiting[1] == (
        "no host has 1 x GPU, 8 CPU free: 1 host with the GPUs free but short of CPU or memory "
        "(at most 4 CPU, 8 GiB memory free on one)"
    )


def test_multi_node_jobs_are_not_placed_here_but_count_against_the_quota():
    jobs = [job(1, 4, nodes=2, priority=90), job(2, 2, priority=50), job(3, 1, priority=40)]
    decisions = schedule(jobs, [host("a")], {"nlp": Allowance(gpus=10)})
    assert decisions.to_cluster == [1]
    assert placed(decisions) == {2: ("a", (0, 1))}
    assert decisions.waiting == {3: "project nlp GPU quota: 0 GPU(s) left, needs 1 (1 over)"}


def test_a_host_listed_twice_is_refused():
    with pytest.raises(ValueError, match="host a is listed twice"):
        schedule([job(1)], [host("a"), host("a")], {})


def test_preemption_picks_the_fewest_then_lowest_priority_victims_on_one_host():
    hosts = [host("a", 8, busy=range(8)), host("b", 8, busy=range(8))]
    running = [
        attempt(11, "a", [0, 1, 2, 3], priority=30),
        attempt(12, "a", [4, 5], priority=10),
        attempt(13, "a", [6, 7], priority=10),
        attempt(21, "b", [0, 1, 2, 3], priority=20),
        attempt(22, "b", [4, 5, 6, 7], priority=40),
    ]
    decisions = schedule([job(1, 4, priority=60)], hosts, {}, running)
    assert [(p.victim, p.for_job) for p in decisions.preempt] == [(21, 1)], (
        "one victim beats two; among single victims the lowest priority"
    )
    assert decisions.preempt[0].reason == (
        "preempted for job 1 (priority 60 over 20), which needs 4 x GPU on b"
    )
    assert decisions.waiting == {1: "waiting for 1 preempted job(s) to stop on b"}
    assert decisions.placed == []


def test_victims_count_only_for_gpus_of_the_kind_asked():
    hosts = [host("l", 4, kind=L40S, busy=range(4)), host("h", 4, busy=[0, 1])]
    running = [attempt(11, "l", range(4)), attempt(12, "h", [0, 1])]
    decisions = schedule(
        [job(1, demand=Demand(gpus=4, gpu_product="H100"), priority=90)], hosts, {}, running
    )
    assert [p.victim for p in decisions.preempt] == [12]


def test_no_preemption_for_a_job_that_fits_elsewhere():
    hosts = [host("a", 4, busy=range(4)), host("b", 4)]
    decisions = schedule([job(1, 4, priority=90)], hosts, {}, [attempt(11, "a", range(4))])
    assert decisions.preempt == [] and placed(decisions) == {1: ("b", (0, 1, 2, 3))}


def test_no_preemption_of_equal_priority_or_non_preemptible_or_not_yet_running():
    hosts = [host("a", 2, busy=[0, 1]), host("b", 2, busy=[0, 1]), host("c", 2, busy=[0, 1])]
    running = [
        attempt(11, "a", [0, 1], priority=50),
        attempt(12, "b", [0, 1], priority=10, preemptible=False),
        attempt(13, "c", [0, 1], priority=10, state=states.STARTING),
    ]
    decisions = schedule([job(1, 2, priority=50)], hosts, {}, running)
    assert decisions.preempt == []
    assert decisions.waiting[1].startswith("no host has 2 x GPU free: 3 hosts busy")


def test_the_same_victim_is_never_chosen_twice_in_a_pass():
    hosts = [host("a", 4, busy=range(4))]
    running = [attempt(11, "a", range(4), priority=10)]
    decisions = schedule([job(1, 4, priority=90), job(2, 4, priority=80)], hosts, {}, running)
    assert [(p.victim, p.for_job) for p in decisions.preempt] == [(11, 1)]
    assert decisions.waiting[2].startswith("no host has 4 x GPU free")


def test_a_job_waits_for_attempts_already_stopping_instead_of_preempting_more():
    hosts = [host("a", 4, busy=range(4)), host("b", 4, busy=range(4))]
    running = [
        attempt(11, "a", range(4), priority=10, stopping=True),
        attempt(21, "b", range(4), priority=5),
    ]
    decisions = schedule([job(1, 4, priority=90)], hosts, {}, running)
    assert decisions.preempt == []
    assert decisions.waiting == {1: "waiting for 1 preempted job(s) to stop on a"}


def test_a_preempting_job_holds_the_free_gpus_it_will_use_against_lower_jobs():
    hosts = [host("a", 4, busy=[0, 1])]
    running = [attempt(11, "a", [0, 1], priority=10)]
    decisions = schedule([job(1, 4, priority=90), job(2, 2, priority=50)], hosts, {}, running)
    assert [p.victim for p in decisions.preempt] == [11]
    assert decisions.placed == [], "GPUs 2 and 3 are kept for job 1"
    assert decisions.waiting[2].startswith("no host has 2 x GPU free")


def test_preemption_needs_the_freed_cpu_to_be_enough():
    hosts = [host("a", 2, busy=[0, 1], free_cpu=2.0)]
    demand = Demand(gpus=2, cpu=8)
    small = [attempt(11, "a", [0, 1], cpu=2.0)]
    assert schedule([job(1, demand=demand, priority=90)], hosts, {}, small).preempt == []
    enough = [attempt(11, "a", [0, 1], cpu=6.0)]
    assert [
        p.victim for p in schedule([job(1, demand=demand, priority=90)], hosts, {}, enough).preempt
    ] == [11]


def test_a_job_over_its_quota_never_preempts():
    hosts = [host("a", 4, busy=range(4))]
    running = [attempt(11, "a", range(4))]
    decisions = schedule([job(1, 4, priority=90)], hosts, {"nlp": Allowance(gpus=2)}, running)
    assert decisions.preempt == [] and "GPU quota" in decisions.waiting[1]


# Property: whatever the fleet, queue and allowances, a pass never double-books a GPU, never
# gives a job GPUs of another kind, and never lets a project exceed its quota or budget.

hosts_strategy = st.lists(
    st.builds(
        lambda n, kind, busy, online: (n, kind, busy, online),
        st.integers(0, 8),
        st.sampled_from([H100, L40S]),
        st.sets(st.integers(0, 7)),
        st.sampled_from([True, True, True, False]),
    ),
    min_size=1,
    max_size=6,
)
jobs_strategy = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 1, 2, 2, 4, 8]),
        st.integers(0, 100),
        st.sampled_from(["nlp", "cv", "rl"]),
        st.sampled_from([None, None, "H100", "L40S"]),
        st.sampled_from([1, 1, 1, 1, 2]),
        st.integers(1, 20),
    ),
    max_size=25,
)
allowance_strategy = st.dictionaries(
    st.sampled_from(["nlp", "cv", "rl"]),
    st.builds(
        Allowance,
        st.one_of(st.none(), st.integers(-2, 24)),
        st.one_of(st.none(), st.floats(-3600, 200 * 3600)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(hosts_strategy, jobs_strategy, allowance_strategy, st.data())
def test_a_pass_never_double_books_a_gpu_nor_overspends_a_project(
    raw_hosts, raw_jobs, allowances, data
):
    hosts = [
        host(f"h{i}", n, kind=kind, busy={g for g in busy if g < n}, online=online)
        for i, (n, kind, busy, online) in enumerate(raw_hosts)
    ]
    running = []
    for h in hosts:
        held = sorted(h.allocated_gpus)
        while held:
            size = data.draw(st.integers(1, len(held)))
            taken, held = held[:size], held[size:]
            running.append(
                attempt(
                    1000 + len(running),
                    h.name,
                    taken,
                    priority=data.draw(st.integers(0, 100)),
                    preemptible=data.draw(st.sampled_from([True, True, False])),
                    stopping=data.draw(st.sampled_from([False, False, False, True])),
                )
            )
    jobs = [
        job(i, demand=Demand(gpus=g, gpu_product=product), priority=p, project=proj,
            nodes=nodes, gpu_seconds=g * nodes * hours * 3600.0)
        for i, (g, p, proj, product, nodes, hours) in enumerate(raw_jobs)
    ]  # fmt: skip
    decisions = schedule(jobs, hosts, allowances, running)
    by_name, by_id = {h.name: h for h in hosts}, {j.job_id: j for j in jobs}

    booked = Counter((p.host, g) for p in decisions.placed for g in p.gpus)
    assert all(n == 1 for n in booked.values()), "a GPU was handed out twice"
    for p in decisions.placed:
        h, wanted = by_name[p.host], by_id[p.job_id]
        assert len(p.gpus) == wanted.demand.gpus and wanted.nodes == 1 and h.online
        assert not set(p.gpus) & h.allocated_gpus, "an allocated GPU was handed out"
        assert all(wanted.demand.gpu_fits(h.gpus[g]) for g in p.gpus)

    admitted = [by_id[p.job_id] for p in decisions.placed] + [
        by_id[i] for i in decisions.to_cluster
    ]
    admitted += [by_id[p.for_job] for p in decisions.preempt]
    admitted = list({j.job_id: j for j in admitted}.values())
    for project, allowance in allowances.items():
        mine = [j for j in admitted if j.project == project]
        if allowance.gpus is not None:
            assert sum(j.total_gpus for j in mine) <= max(0, allowance.gpus)
        if allowance.gpu_seconds is not None:
            assert sum(j.gpu_seconds for j in mine) <= max(0.0, allowance.gpu_seconds)

    victims = [p.victim for p in decisions.preempt]
    assert len(victims) == len(set(victims)), "a victim was chosen twice"
    by_victim = {r.job_id: r for r in running}
    for p in decisions.preempt:
        victim, winner = by_victim[p.victim], by_id[p.for_job]
        assert victim.preemptible and not victim.stopping and victim.priority < winner.priority
        assert p.for_job in decisions.waiting and p.for_job not in placed(decisions)
    assert set(placed(decisions)).isdisjoint(decisions.waiting)
    assert len(decisions.placed) + len(decisions.waiting) + len(decisions.to_cluster) == len(jobs)


def test_preemption_over_three_passes_stop_then_wait_then_place():
    """What the hub sees: the victim is told to stop, then is stopping (no second victim is
    chosen meanwhile), then has let its GPUs go and the job takes them."""
    queued = [job(1, 4, priority=90)]
    busy = [host("a", 4, busy=range(4)), host("b", 4, busy=range(4))]
    victims = [attempt(11, "a", range(4), priority=10), attempt(21, "b", range(4), priority=20)]
    first = schedule(queued, busy, {}, victims)
    assert [p.victim for p in first.preempt] == [11]
    told = [replace(victims[0], stopping=True), victims[1]]
    second = schedule(queued, busy, {}, told)
    assert second.preempt == [] and second.placed == []
    assert second.waiting == {1: "waiting for 1 preempted job(s) to stop on a"}
    freed = [host("a", 4), busy[1]]
    third = schedule(queued, freed, {}, victims[1:])
    assert placed(third) == {1: ("a", (0, 1, 2, 3))} and third.preempt == []


def test_a_reason_names_a_few_hosts_and_counts_the_rest():
    hosts = [host(f"h{i}", online=False) for i in range(6)]
    assert schedule([job(1)], hosts, {}).waiting[1] == (
        "no host has 1 x GPU free: 6 hosts excluded: h0 offline, h1 offline, h2 offline, "
        "h3 offline and 2 more hosts"
    )
