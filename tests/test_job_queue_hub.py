"""The hub's side of jobs, through its services with a hand-moved clock: agents check in
through the real check-in service with their job reports, the scheduling pass runs as the
hub's background job would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiorch.deploy.spec import SpecError
from aiorch.errors import Conflict
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import CheckinRequest
from aiorch.hub.services import (
    agents,
    budgets,
    deployments,
    enrollment,
    images,
    job_scheduling,
    jobs,
    metrics,
)
from tests.fixtures_hub import checkin_body, fresh_csr

IMAGE = "localhost/aiorch-model:v1"
H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 81559 * 2**20}
JOB = """
apiVersion: aiorch.dev/v1
kind: Job
metadata: {{name: {name}, project: {project}}}
spec:
  image: {image}
  command: [python, train.py]
  resources: {{gpus: {gpus}}}
  maxDuration: {duration}
  priority: {priority}
  preemptible: {preemptible}
  retry: {{"on": [node_lost, preempted, error], limit: {limit}, backoff: 60}}
"""


def job(name: str = "train", **values: Any) -> str:
    fields = {"project": "nlp", "image": IMAGE, "gpus": 1, "duration": "1h", "priority": 50,
              "preemptible": "false", "limit": 1, **values}  # fmt: skip
    return JOB.format(name=name, **fields)


def facts(name: str, gpus: int, simulated: bool = False) -> dict[str, Any]:
    return {
        "hostname": name,
        "gpus": [{**H100, "index": i, "simulated": simulated} for i in range(gpus)],
        "cpu": {"logical_count": 16},
        "memory_total_bytes": 2**36,
        "container_runtime": "podman",
    }


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
def ctx(make_context: Any) -> HubContext:
    context: HubContext = make_context(poll_interval_s=10, job_disconnect_window_s=300)
    asyncio.run(images.store(context, IMAGE, _chunks(b"archive"), "t", 1 << 20))
    token = enrollment.create_token(context, "dc1", 3600, 10, "user:t")["token"]
    enrollment.enroll(context, token, fresh_csr(), facts("gpu1", 2), "1")
    return context


def agent_of(ctx: HubContext, host: str) -> str:
    db = ctx.store.read()
    return str(db.execute("SELECT agent_id FROM hosts WHERE name = ?", [host]).fetchone()[0])


def checkin(ctx: HubContext, host: str, reports: dict[str, Any] | None = None) -> dict[str, Any]:
    """One check-in through the hub's service, with job reports; the desired state back."""
    body = {**checkin_body(), "report": {"jobs": reports or {}}}
    answer = asyncio.run(
        agents.checkin(ctx, agent_of(ctx, host), CheckinRequest.model_validate(body), None)
    )
    assert answer.document is not None
    return answer.document


def report(seq: int, state: str, **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "state": state, "started_at": 1_800_000_000.0, **extra}


def desired_jobs(ctx: HubContext, host: str = "gpu1") -> list[dict[str, Any]]:
    return list(checkin(ctx, host).get("jobs", []))


def run_pass(ctx: HubContext) -> None:
    job_scheduling.schedule_pass(ctx)


def test_submit_names_every_wrong_field(ctx: HubContext):
    with pytest.raises(SpecError) as caught:
        jobs.submit(ctx, job(gpus=-1, duration="soon", priority=500), "user:t")
    lines = caught.value.problems
    assert any("spec.resources.gpus" in line for line in lines)
    assert any("spec.maxDuration" in line for line in lines)
    assert any("spec.priority" in line for line in lines)


def test_submit_refuses_an_image_missing_from_the_store_and_a_taken_name(ctx: HubContext):
    with pytest.raises(SpecError, match=r"spec\.image"):
        jobs.submit(ctx, job(image="localhost/nope:v9"), "user:t")
    jobs.submit(ctx, job(), "user:t")
    with pytest.raises(Conflict, match="exists"):
        jobs.submit(ctx, job(), "user:t")


def test_a_job_runs_to_success_and_settles_its_budget(ctx: HubContext):
    view = jobs.submit(ctx, job(), "user:t")
    assert (view["state"], view["reason"], view["attempt"]) == ("queued", "submitted", None)
    run_pass(ctx)
    view = jobs.show(ctx, "train")
    assert view["state"] == "scheduled" and view["gpu_hours_reserved"] == 1.0
    attempt = view["attempt"]["id"]
    [entry] = desired_jobs(ctx)
    assert (entry["attempt"], entry["gpus"], entry["simulated_gpus"]) == (attempt, [0], 0)
    checkin(ctx, "gpu1", {attempt: report(1, "running")})
    assert jobs.show(ctx, "train")["state"] == "running"
    final = report(2, "exited", exit_code=0, finished_at=1_800_001_800.0, log_tail="done\n")
    assert "jobs" not in checkin(ctx, "gpu1", {attempt: final}), "a finished attempt leaves"
    view = jobs.show(ctx, "train")
    assert (view["state"], view["exit_code"], view["gpu_hours_reserved"]) == ("succeeded", 0, 0)
    assert view["gpu_hours_used"] == pytest.approx(0.5)
    assert [e["to"] for e in view["events"]] == [
        "queued", "admitted", "scheduled", "running", "succeeded"
    ]  # fmt: skip
    assert jobs.logs(ctx, "train")["log_tail"] == "done\n"
    actions = [r[0] for r in ctx.store.read().execute("SELECT action FROM audit_log")]
    assert {"job.submit", "job.admitted", "job.scheduled", "job.succeeded"} <= set(actions)


def test_a_stale_or_replayed_report_changes_nothing(ctx: HubContext):
    jobs.submit(ctx, job(limit=1), "user:t")
    run_pass(ctx)
    first = jobs.show(ctx, "train")["attempt"]["id"]
    checkin(ctx, "gpu1", {first: report(3, "running")})
    checkin(ctx, "gpu1", {first: report(2, "exited", exit_code=0)})  # older seq: ignored
    assert jobs.show(ctx, "train")["state"] == "running"
    checkin(ctx, "gpu1", {first: report(4, "exited", exit_code=1, finished_at=1_800_000_060.0)})
    view = jobs.show(ctx, "train")
    assert view["state"] == "queued" and "exited with code 1; retrying" in view["reason"]
    ctx.clock.now += 61  # type: ignore[attr-defined]  # past the backoff
    checkin(ctx, "gpu1")
    run_pass(ctx)
    second = jobs.show(ctx, "train")["attempt"]["id"]
    assert second != first and second.endswith(".2")
    before = jobs.show(ctx, "train")
    checkin(ctx, "gpu1", {first: report(9, "exited", exit_code=0)})  # the old attempt: fenced
    checkin(ctx, "gpu1", {first: report(4, "exited", exit_code=1)})  # a replay
    assert jobs.show(ctx, "train") == before


def test_retry_with_backoff_then_failed_with_its_reason(ctx: HubContext):
    jobs.submit(ctx, job(limit=1), "user:t")
    for number in (1, 2):
        run_pass(ctx)
        view = jobs.show(ctx, "train")
        assert view["attempt"]["id"].endswith(f".{number}")
        checkin(ctx, "gpu1", {view["attempt"]["id"]: report(1, "exited", exit_code=3)})
        if number == 1:
            run_pass(ctx)  # still in its backoff
            assert jobs.show(ctx, "train")["state"] == "queued"
            ctx.clock.now += 61  # type: ignore[attr-defined]
            checkin(ctx, "gpu1")
    view = jobs.show(ctx, "train")
    assert view["state"] == "failed" and view["exit_code"] == 3
    assert view["reason"] == "exited with code 3; no retries left (1 allowed)"


def test_budget_keeps_a_job_queued_with_the_reason(ctx: HubContext):
    budgets.set_quota(ctx, "nlp", "user:admin", gpu_hours=1.5, budget_period="week")
    jobs.submit(ctx, job("a"), "user:t")
    jobs.submit(ctx, job("b"), "user:t")
    run_pass(ctx)
    assert jobs.show(ctx, "a")["state"] == "scheduled"
    view = jobs.show(ctx, "b")
    assert view["state"] == "queued" and "GPU-hour budget" in view["reason"]
    left = budgets.budget(ctx.store.read(), "nlp", ctx.clock())
    assert left["gpu_hours_left"] == pytest.approx(0.5), "the reservation counts"


def test_quota_counts_job_gpus_and_a_deployment_cannot_take_a_jobs_gpu(ctx: HubContext):
    jobs.submit(ctx, job(gpus=2), "user:t")
    run_pass(ctx)
    assert jobs.show(ctx, "train")["attempt"]["gpus"] == [0, 1]
    spec = (
        "apiVersion: aiorch.dev/v1\nkind: Deployment\nmetadata: {name: web, project: nlp}\n"
        f"spec: {{image: {IMAGE}, resources: {{gpus: 1}}}}\n"
    )
    result = deployments.apply(ctx, spec, "user:t")
    assert result["plan"]["unplaced"], "both GPUs are the job's"
    budgets.set_quota(ctx, "nlp", "user:admin", max_gpus=2)
    jobs.submit(ctx, job("more"), "user:t")
    run_pass(ctx)
    assert "GPU quota" in jobs.show(ctx, "more")["reason"]


def test_cancel_queued_at_once_and_running_through_its_agent(ctx: HubContext):
    jobs.submit(ctx, job("waits", gpus=4), "user:t")
    run_pass(ctx)
    assert "no host has" in jobs.show(ctx, "waits")["reason"]
    assert jobs.cancel(ctx, "waits", "user:t")["state"] == "cancelled"
    with pytest.raises(Conflict):
        jobs.cancel(ctx, "waits", "user:t")
    jobs.submit(ctx, job(), "user:t")
    run_pass(ctx)
    attempt = jobs.show(ctx, "train")["attempt"]["id"]
    assert jobs.cancel(ctx, "train", "user:t")["state"] == "scheduled"
    assert desired_jobs(ctx)[0]["stop"] == "cancel"
    checkin(ctx, "gpu1", {attempt: report(1, "stopped", finished_at=1_800_000_010.0)})
    assert jobs.show(ctx, "train")["state"] == "cancelled"
    assert desired_jobs(ctx) == []


def test_silent_host_is_unconfirmed_then_node_lost_and_requeued(ctx: HubContext):
    jobs.submit(ctx, job(), "user:t")
    run_pass(ctx)
    attempt = jobs.show(ctx, "train")["attempt"]["id"]
    checkin(ctx, "gpu1", {attempt: report(1, "running")})
    ctx.clock.now += 100  # type: ignore[attr-defined]  # offline, inside the window
    run_pass(ctx)
    view = jobs.show(ctx, "train")
    assert (view["state"], view["confirmed"]) == ("running", False)
    ctx.clock.now += 250  # type: ignore[attr-defined]  # past the window
    run_pass(ctx)
    view = jobs.show(ctx, "train")
    events = [e["to"] for e in view["events"]]
    assert events[-2:] == ["node_lost", "queued"] and "silent" in view["events"][-1]["reason"]
    checkin(ctx, "gpu1", {attempt: report(2, "exited", exit_code=0)})  # the old attempt: fenced
    run_pass(ctx)  # the host is back: the job starts again there
    view = jobs.show(ctx, "train")
    assert view["state"] == "scheduled" and view["attempt"]["id"].endswith(".2")


def test_preemption_stops_the_victim_and_requeues_it(ctx: HubContext):
    """The whole path through the scheduling pass: a higher-priority job that fits nowhere
    preempts the running preemptible one, waits for it to stop, then takes its GPUs."""
    jobs.submit(ctx, job("low", gpus=2, preemptible="true"), "user:t")
    run_pass(ctx)
    low = jobs.show(ctx, "low")
    checkin(ctx, "gpu1", {low["attempt"]["id"]: report(1, "running", started_at=1.8e9)})
    jobs.submit(ctx, job("high", gpus=2, priority=90), "user:t")
    run_pass(ctx)
    assert desired_jobs(ctx)[0]["stop"] == "preempt"
    assert "preempted by job high" in jobs.show(ctx, "low")["reason"]
    run_pass(ctx)  # the victim is stopping: the winner waits, nobody else is picked
    high = jobs.show(ctx, "high")
    assert high["state"] == "queued" and "preempted job(s) to stop" in high["reason"], high
    checkin(ctx, "gpu1", {low["attempt"]["id"]: report(2, "stopped", finished_at=1.8e9 + 5)})
    view = jobs.show(ctx, "low")
    assert [e["to"] for e in view["events"]][-2:] == ["preempted", "queued"]
    run_pass(ctx)
    assert jobs.show(ctx, "high")["state"] == "scheduled", "the GPUs went to the winner"
    assert jobs.show(ctx, "low")["state"] == "queued", "the victim waits for room again"


def test_simulated_gpus_run_without_devices_and_say_so(ctx: HubContext):
    token = enrollment.create_token(ctx, "lab", 3600, 1, "user:t")["token"]
    enrollment.enroll(ctx, token, fresh_csr(), facts("sim1", 4, simulated=True), "1")
    jobs.submit(ctx, job(gpus=3), "user:t")
    run_pass(ctx)
    view = jobs.show(ctx, "train")
    assert (view["attempt"]["host"], view["attempt"]["simulated_gpus"]) == ("sim1", 3)
    [entry] = desired_jobs(ctx, "sim1")
    assert (entry["gpus"], entry["simulated_gpus"]) == ([], 3)


def test_secret_env_is_sealed_at_rest_and_opened_for_the_agent(ctx: HubContext):
    spec = job() + "  secretEnv: {TOKEN: hunter2}\n"
    jobs.submit(ctx, spec, "user:t")
    run_pass(ctx)
    stored = ctx.store.read().execute("SELECT spec FROM jobs").fetchone()[0]
    desired = ctx.store.read().execute("SELECT document FROM desired_states").fetchone()[0]
    assert "hunter2" not in stored and "hunter2" not in desired
    assert desired_jobs(ctx)[0]["secret_env"] == {"TOKEN": "hunter2"}


def test_metrics_carry_jobs_by_state_and_budgets(ctx: HubContext):
    budgets.set_quota(ctx, "nlp", "user:admin", gpu_hours=10)
    jobs.submit(ctx, job(), "user:t")
    text = metrics.render(ctx).decode()
    assert 'aiorch_jobs{project="nlp",state="queued"} 1.0' in text
    assert 'aiorch_project_gpu_hours_budget{period="month",project="nlp"} 10.0' in text
    run_pass(ctx)
    text = metrics.render(ctx).decode()
    assert 'aiorch_project_gpu_hours_remaining{period="month",project="nlp"} 9.0' in text
    assert json.loads(ctx.store.read().execute("SELECT gpus FROM job_attempts").fetchone()[0])


def test_a_job_cannot_take_a_gpu_a_replica_holds(ctx: HubContext):
    spec = (
        "apiVersion: aiorch.dev/v1\nkind: Deployment\nmetadata: {name: web, project: nlp}\n"
        f"spec: {{image: {IMAGE}, resources: {{gpus: 1}}}}\n"
    )
    deployments.apply(ctx, spec, "user:t")
    jobs.submit(ctx, job("two", gpus=2), "user:t")
    jobs.submit(ctx, job("one", gpus=1), "user:t")
    run_pass(ctx)
    assert "no host has 2 x GPU" in jobs.show(ctx, "two")["reason"], "never blocks 'one'"
    replica = ctx.store.read().execute("SELECT gpus FROM deployment_replicas").fetchone()[0]
    assert jobs.show(ctx, "one")["attempt"]["gpus"] != json.loads(replica)


def test_an_attempt_silent_past_max_duration_times_out_on_the_hub(ctx: HubContext):
    jobs.submit(ctx, job(duration="60s"), "user:t")
    run_pass(ctx)
    attempt = jobs.show(ctx, "train")["attempt"]["id"]
    for _ in range(40):  # the host keeps checking in, but never reports the attempt's end
        ctx.clock.now += 10  # type: ignore[attr-defined]
        checkin(ctx, "gpu1", {attempt: report(1, "running")})
    run_pass(ctx)
    view = jobs.show(ctx, "train")
    assert view["state"] == "timed_out" and "no final report" in view["reason"]


def test_cancel_while_the_host_is_lost_ends_cancelled_not_requeued(ctx: HubContext):
    jobs.submit(ctx, job(), "user:t")
    run_pass(ctx)
    jobs.cancel(ctx, "train", "user:t")
    ctx.clock.now += 400  # type: ignore[attr-defined]
    run_pass(ctx)
    view = jobs.show(ctx, "train")
    assert [e["to"] for e in view["events"]][-2:] == ["node_lost", "cancelled"]
