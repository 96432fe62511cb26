"""The hub's side of the GPU acceptance gate (issue 15 part 4): a run's stats become each host's
acceptance record (newest wins, a change of verdict audited), the host's detail shows it, and
only accepted hosts (or hosts without a record) take GPU work."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiorch.cli.fleet import acceptance_line
from aiorch.deploy.eligibility import Demand
from aiorch.deploy.placement import plan_placement
from aiorch.hub.app import create_app
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, fleet_view, runs, tokens
from aiorch.hub.services.gpu_acceptance import records_from_stats, refusals, save_records, summary
from aiorch.jobs.capacity import Capacity, kind_of
from edge_agent.gpu.acceptance import Thresholds, accept
from tests.fixtures_hub import Clock
from tests.test_gpu_acceptance import PLAYBOOKS, fake_agent_venv
from tests.test_placement import deployment, host
from tests.test_runs_units import add_host, finished

HOSTS = ("good", "bad", "plain")


@pytest.fixture
def ctx(make_context: Callable[..., HubContext]) -> HubContext:
    made = make_context(preflight_timeout_s=1)
    for name in HOSTS:
        add_host(made, name, site="dc1", role="gpu-server")
    return made


def record(accepted: bool) -> dict[str, Any]:
    """A real record of the checker over the simulated backend (4 x A100 present)."""
    return accept("simulated:4xA100-40GB", Thresholds(expect_count=4 if accepted else 8))


def stats(given: Any) -> dict[str, Any]:
    """ansible-runner's stats event, set_stats' data in its artifact_data."""
    data = {"ok": {"good": 6}, "failures": {}, "artifact_data": {"aiorch_gpu_acceptance": given}}
    return {"event": "playbook_on_stats", "event_data": data}


def received(ctx: HubContext, given: Any, run_id: str = "r1") -> dict[str, dict[str, Any]]:
    records = records_from_stats(stats(given), HOSTS)
    save_records(ctx, run_id, records)
    return records


def acceptance_audit(ctx: HubContext) -> list[dict[str, Any]]:
    return list(reversed(audit.list_entries(ctx, action="host.gpu_acceptance")))


# ---- records -----------------------------------------------------------------------------


def test_a_stats_event_stores_each_hosts_record_accepted_and_failed(ctx: HubContext) -> None:
    good, bad = record(True), record(False)
    assert set(received(ctx, {"good": good, "bad": bad})) == {"good", "bad"}
    db = ctx.store.read()
    rows = {r["host"]: r for r in db.query("SELECT * FROM gpu_acceptance")}
    assert {h: (r["accepted"], r["run_id"]) for h, r in rows.items()} == {
        "good": (1, "r1"),
        "bad": (0, "r1"),
    }
    assert json.loads(rows["good"]["record"]) == good
    shown = summary(db, "bad")
    assert shown is not None and shown["accepted"] is False
    assert shown["backend"] == "simulated:4xA100-40GB" and shown["simulated"] is True
    assert shown["gpus"] == 4
    assert shown["failures"] == bad["failures"] and shown["failures"][0].startswith("gpu_count")
    assert shown["recorded_at"] == ctx.clock() and summary(db, "plain") is None
    assert refusals(db) == {"bad": f"gpu acceptance failed on bad: {bad['failures'][0]}"}


def test_the_newest_record_wins_and_a_change_of_verdict_is_audited(ctx: HubContext) -> None:
    clock = ctx.clock
    assert isinstance(clock, Clock)
    received(ctx, {"good": record(True)}, "r1")
    clock.now += 60
    received(ctx, {"good": record(True)}, "r2")  # the same verdict: stored, not audited
    clock.now += 60
    received(ctx, {"good": record(False)}, "r3")
    entries = acceptance_audit(ctx)
    assert [(e["target"], e["detail"]["accepted"], e["detail"]["was"]) for e in entries] == [
        ("host:good", True, None),
        ("host:good", False, True),
    ]
    assert entries[1]["detail"]["run"] == "r3" and entries[1]["actor"] == "hub"
    shown = summary(ctx.store.read(), "good")
    assert shown is not None and (shown["accepted"], shown["run_id"]) == (False, "r3")
    clock.now -= 600  # a run that reports after a newer one (a clock set back) changes nothing
    received(ctx, {"good": record(True)}, "r0")
    shown = summary(ctx.store.read(), "good")
    assert shown is not None and (shown["accepted"], shown["run_id"]) == (False, "r3")
    assert len(acceptance_audit(ctx)) == 2


@pytest.mark.parametrize(
    ("given", "logged"),
    [
        (["good"], "a list, not a mapping of hosts"),
        ("accepted", "a str, not a mapping of hosts"),
        ({"nobody": {"accepted": True}}, "'nobody': not a host of this run"),
        ({"good": "yes"}, "'good': a str, not a record"),
        ({"good": {"backend": "nvml"}}, "'good': it has no accepted: true/false"),
        ({"good": {"accepted": "true"}}, "'good': it has no accepted: true/false"),
    ],
)
def test_unusable_stats_are_ignored_with_a_log_line(
    ctx: HubContext, caplog: pytest.LogCaptureFixture, given: Any, logged: str
) -> None:
    with caplog.at_level(logging.WARNING, "aiorch.hub.gpu_acceptance"):
        assert received(ctx, given) == {}
    assert logged in caplog.text and len(caplog.records) == 1
    assert list(ctx.store.read().query("SELECT * FROM gpu_acceptance")) == []


@pytest.mark.parametrize(
    "event",
    [
        {"event": "runner_on_ok", "event_data": {"artifact_data": {}}},
        {"event": "playbook_on_stats", "event_data": "odd"},
        {"event": "playbook_on_stats", "event_data": {"artifact_data": ["x"]}},
        {"event": "playbook_on_stats", "event_data": {"artifact_data": {"other": 1}}},
    ],
)
def test_events_without_acceptance_stats_carry_no_records(event: dict[str, Any]) -> None:
    assert records_from_stats(event, HOSTS) == {}


def test_the_runs_secrets_are_masked_in_a_stored_record() -> None:
    given = {"good": {"accepted": True, "backend": "nvml", "failures": ["saw s3cret-4242"]}}
    (kept,) = records_from_stats(stats(given), HOSTS, ["s3cret-4242"]).values()
    assert kept["failures"] == ["saw ********"]


# ---- shown -------------------------------------------------------------------------------


def test_the_host_detail_shows_its_record_and_null_without_one(ctx: HubContext) -> None:
    bad = record(False)
    received(ctx, {"bad": bad})
    made = tokens.create(ctx, "t", "user:test", role="viewer")
    auth = {"Authorization": f"Bearer {made['token']}"}
    with TestClient(create_app(ctx, run_jobs=False)) as client:
        shown = client.get("/api/v1/hosts/bad", headers=auth)
        plain = client.get("/api/v1/hosts/plain", headers=auth)
    assert shown.status_code == 200 and plain.status_code == 200
    acceptance = shown.json()["gpu_acceptance"]
    assert acceptance["accepted"] is False and acceptance["simulated"] is True
    assert acceptance["failures"] == bad["failures"] and acceptance["recorded_at"] == ctx.clock()
    assert plain.json()["gpu_acceptance"] is None
    line = acceptance_line(acceptance)
    assert line.startswith("NOT accepted (simulated:4xA100-40GB, 4 GPUs) at ")
    assert "gpu_count: measured 4, expected 8" in line
    assert acceptance_line(None) == "no record (not gated: takes GPU work)"


# ---- placement ---------------------------------------------------------------------------

REFUSED = "gpu acceptance failed on bad: gpu_count: measured 4, expected 8 (GPUs missing)"


def test_placement_skips_a_failed_host_and_places_on_accepted_and_unrecorded_ones() -> None:
    fleet = [host("bad", gpu_acceptance_failed=REFUSED), host("good"), host("plain")]
    spec = deployment(2, resources={"gpus": 8}, placement={"spread": "hosts"})
    plan = plan_placement(spec, fleet)
    assert sorted(r.host for r in plan.replicas) == ["good", "plain"]
    assert [str(e) for e in plan.excluded] == [f"host bad excluded: {REFUSED}"]
    alone = plan_placement(deployment(1, resources={"gpus": 1}), fleet[:1])
    assert [u.reason for u in alone.unplaced] == [f"every host is excluded: {REFUSED}"]
    cpu_only = plan_placement(deployment(1, resources={"cpu": 2}), fleet[:1])
    assert [r.host for r in cpu_only.replicas] == ["bad"]  # the gate is about its GPUs


def test_a_replica_on_a_host_that_then_fails_acceptance_moves() -> None:
    spec = deployment(1, resources={"gpus": 1})
    first = plan_placement(spec, [host("bad"), host("good", gpus=4)])
    assert [r.host for r in first.replicas] == ["good"]
    failed = [host("bad"), host("good", gpus=4, gpu_acceptance_failed=REFUSED)]
    again = plan_placement(spec, failed, first.replicas)
    assert [(m.previous.host, m.replica.host) for m in again.moved] == [("good", "bad")]
    assert REFUSED in again.moved[0].reason


def test_the_fleet_view_carries_the_refusal_of_a_failed_host(ctx: HubContext) -> None:
    received(ctx, {"good": record(True), "bad": record(False)})
    views = {v.name: v for v in fleet_view.host_views(ctx, ctx.store.read())}
    assert views["good"].gpu_acceptance_failed is None
    assert views["plain"].gpu_acceptance_failed is None
    assert (views["bad"].gpu_acceptance_failed or "").startswith("gpu acceptance failed on bad: ")


def test_a_gpu_job_finds_no_gpu_on_a_failed_host_and_a_cpu_job_still_runs_there() -> None:
    capacity = Capacity([host("bad", gpu_acceptance_failed=REFUSED)])
    gpu, cpu = Demand(gpus=1), Demand(cpu=1.0)
    index = capacity.eligible(kind_of(gpu, None))
    assert capacity.find(index, gpu) is None
    assert REFUSED in capacity.why_not(index, gpu, "nlp")
    found = capacity.find(capacity.eligible(kind_of(cpu, None)), cpu)
    assert found is not None and found.view.name == "bad"


# ---- a real run --------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_real_gpu_acceptance_run_stores_both_verdicts(
    make_context: Callable[..., HubContext], tmp_path: Path
) -> None:
    """gpu_acceptance.yml through the hub on two local hosts over the simulated backend (in
    check mode, so nothing is written on them): one passes, one misses GPUs."""
    ctx = make_context(playbooks_dir=PLAYBOOKS, preflight_timeout_s=1)
    venv = fake_agent_venv(tmp_path)
    (tmp_path / "agent.yaml").write_text("gpu_backend: simulated:4xA100-40GB\n")
    for name, count in (("good", 4), ("bad", 8)):
        hostvars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "aiorch_gpu_acceptance_agent_venv": str(venv),
            "aiorch_gpu_acceptance_agent_config": str(tmp_path / "agent.yaml"),
            "aiorch_gpu_acceptance_expect_count": count,
        }
        add_host(ctx, name, vars=hostvars)
    request = runs.RunRequest("gpu_acceptance.yml", check=True)
    done = finished(ctx, runs.start_run(ctx, request, "user:test"))
    assert done["status"] == "failed" and done["recap"]["bad"]["failed"] == 1, done["message"]
    good, bad = summary(ctx.store.read(), "good"), summary(ctx.store.read(), "bad")
    assert good is not None and good["accepted"] and good["run_id"] == done["id"]
    assert good["simulated"] and good["gpus"] == 4
    assert bad is not None and not bad["accepted"]
    assert bad["failures"][0] == "gpu_count: measured 4, expected 8 (GPUs missing)"
    assert [e["target"] for e in acceptance_audit(ctx)] == ["host:bad", "host:good"]
