"""Jobs on a Slurm cluster, on the hub's side: Slurm's states read as aiorch's, the submission
body, and the pass that submits and follows attempts, driven through the real store and
services with a scripted controller in place of slurmrestd (the lab test,
`test_jobs_lab::test_a_two_node_job_runs_through_slurm`, talks to the real one)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiorch.deploy.spec import SpecError
from aiorch.hub.context import HubContext
from aiorch.hub.services import cluster_jobs, clusters, inventory, job_scheduling, jobs
from aiorch.hub.services.auth import Principal
from aiorch.jobs.slurm import ClusterError, ClusterJob, Reading, reading, submission
from aiorch.jobs.spec import load_job

ADMIN = Principal("user", "root", "admin")
INVENTORY = """
all:
  children:
    aiorch_slurm:
      vars: {aiorch_slurm_cluster: c1}
      hosts:
        n2: {ansible_host: 127.0.0.1}
        n1: {ansible_host: 127.0.0.1}
"""
JOB = """
apiVersion: aiorch.dev/v1
kind: Job
metadata: {name: hosts, project: nlp}
spec:
  image: none
  command: [hostname]
  nodes: 2
  maxDuration: 90s
  retry: {"on": [node_lost], limit: 1}
"""


@pytest.mark.parametrize(
    ("state", "exit_code", "expected"),
    [
        ("PENDING", None, Reading("pending", "pending in Slurm (Resources)")),
        ("CONFIGURING", None, Reading("starting", "Resources")),
        ("RUNNING", None, Reading("running", "Resources")),
        ("COMPLETED", 0, Reading("exited", None, 0)),
        ("FAILED", 3, Reading("exited", "Resources", 3)),
        ("FAILED", 0, Reading("exited", "Resources", 1)),
        ("TIMEOUT", None, Reading("timed_out", "Slurm: TIMEOUT (Resources)")),
        ("CANCELLED", None, Reading("stopped", "Slurm: CANCELLED (Resources)")),
        ("NODE_FAIL", None, Reading("node_lost", "Slurm: NODE_FAIL (Resources)")),
        ("PREEMPTED", None, Reading("preempted", "Slurm: PREEMPTED (Resources)")),
        ("OUT_OF_MEMORY", 9, Reading("failed", "Slurm: OUT_OF_MEMORY (Resources)", 9)),
    ],
)
def test_slurm_states_read_as_aiorch_states(state: str, exit_code: int | None, expected: Reading):
    assert reading(ClusterJob("7", state, "Resources", exit_code)) == expected


def test_a_submission_asks_for_every_node_and_the_time_rounded_up():
    body = submission("1.1", load_job(JOB), "/out")
    assert body["script"] == "#!/bin/sh\nexec srun --nodes=2 --ntasks-per-node=1 hostname\n"
    job = body["job"]
    assert (job["name"], job["nodes"], job["time_limit"]) == ("1.1", [2, 2], 2)
    assert job["standard_output"] == "/out/%j.out" and job["requeue"] is False
    assert "partition" not in job and "gpus_per_node" not in job


def test_a_cluster_job_refuses_what_needs_a_container(ctx: HubContext):
    text = JOB.replace("  command:", "  secretEnv: {TOKEN: x}\n  volumes: []\n  command:")
    with pytest.raises(SpecError) as err:
        jobs.submit(ctx, text, "user:t")
    assert err.value.problems == [
        "spec.secretEnv is not supported on a Slurm cluster (its nodes run the command "
        "without a container)"
    ]
    assert ctx.store.read().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


@dataclass
class Scripted:
    """slurmrestd as a script: the state it reports next, and what it was asked."""

    states: list[str] = field(default_factory=lambda: ["PENDING"])
    submitted: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)  # name -> job id
    down: bool = False
    name: str = "c1"

    @contextmanager
    def session(self) -> Iterator[Scripted]:
        if self.down:
            raise ClusterError("cannot reach the controller: refused")
        yield self

    def submit(self, name: str, spec: Any) -> str:
        self.submitted.append(name)
        self.known[name] = str(6 + len(self.submitted))
        return self.known[name]

    def find(self, name: str) -> str | None:
        return self.known.get(name)

    def status(self, job_id: str) -> ClusterJob:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        started = 1000.0 if state != "PENDING" else None
        ended = 1060.0 if state in ("COMPLETED", "CANCELLED", "NODE_FAIL") else None
        code = 0 if state == "COMPLETED" else None
        return ClusterJob(job_id, state, None, code, "n[1-2]", "n1", started, ended)

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def output(self, job: ClusterJob) -> tuple[str, int]:
        return "n1\nn2\n", 6


@pytest.fixture
def ctx(make_context: Any) -> HubContext:
    context: HubContext = make_context(poll_interval_s=10)
    inventory.import_inventory(context, INVENTORY, "hosts.yml", ADMIN)
    return context


def handed(ctx: HubContext) -> dict[str, Any]:
    jobs.submit(ctx, JOB, "user:t")
    job_scheduling.schedule_pass(ctx)
    return jobs.show(ctx, "hosts")


def follow(ctx: HubContext, slurm: Scripted) -> dict[str, Any]:
    cluster_jobs.follow_pass(ctx, lambda cluster: slurm)
    return jobs.show(ctx, "hosts")


def test_the_inventory_group_is_the_cluster_and_its_first_host_the_controller(ctx: HubContext):
    (cluster,) = clusters.known(ctx.store.read()).values()
    assert (cluster.name, cluster.controller, cluster.hosts) == ("c1", "n1", ("n1", "n2"))
    assert (cluster.rest_port, cluster.job_user) == (6820, "aiorch-job")
    paths = clusters.run_vars(ctx)
    key = clusters.key_paths(ctx.settings.data_dir)[clusters.JWT_KEY]
    assert paths["aiorch_slurm_jwt_key_file"] == str(key) and key.stat().st_mode & 0o077 == 0
    assert (
        key.read_bytes() == clusters.key_paths(ctx.settings.data_dir)[clusters.JWT_KEY].read_bytes()
    )


def test_a_multi_node_job_waits_with_the_reason_when_no_cluster_exists(make_context: Any):
    ctx = make_context()
    job = handed(ctx)
    assert job["state"] == "queued"
    assert job["reason"] == (
        "multi-node jobs run on a Slurm cluster; the inventory has none (group aiorch_slurm)"
    )


def test_a_cluster_job_is_submitted_once_and_followed_to_its_end_with_its_log(ctx: HubContext):
    job = handed(ctx)
    assert (job["state"], job["reason"]) == ("scheduled", "handed to Slurm cluster c1")
    slurm = Scripted(states=["PENDING", "RUNNING", "COMPLETED"])
    job = follow(ctx, slurm)
    assert slurm.submitted == ["1.1"] and job["reason"] == "submitted to Slurm cluster c1 as job 7"
    assert follow(ctx, slurm)["reason"] == "pending in Slurm"
    job = follow(ctx, slurm)
    assert (job["state"], job["reason"]) == (
        "running",
        "running on Slurm cluster c1, job 7 on n[1-2]",
    )
    job = follow(ctx, slurm)
    assert (job["state"], job["exit_code"]) == ("succeeded", 0)
    assert jobs.logs(ctx, "hosts")["log_tail"] == "n1\nn2\n"
    assert slurm.submitted == ["1.1"], "never submitted twice"
    assert job["attempt"]["cluster_job"] == "c1/7"


def test_a_submission_lost_in_a_crash_is_found_by_name_not_sent_again(ctx: HubContext):
    handed(ctx)
    slurm = Scripted(known={"1.1": "41"})
    assert follow(ctx, slurm)["reason"] == "submitted to Slurm cluster c1 as job 41"
    assert slurm.submitted == []


def test_cancel_reaches_slurm_and_the_job_ends_cancelled(ctx: HubContext):
    handed(ctx)
    slurm = Scripted(states=["RUNNING", "CANCELLED"])
    follow(ctx, slurm)
    follow(ctx, slurm)
    jobs.cancel(ctx, "hosts", "user:t")
    job = follow(ctx, slurm)
    assert slurm.cancelled == ["7"] and job["state"] == "cancelled"


def test_a_node_failure_in_slurm_requeues_the_job_for_another_attempt(ctx: HubContext):
    handed(ctx)
    slurm = Scripted(states=["RUNNING", "NODE_FAIL"])
    follow(ctx, slurm)
    follow(ctx, slurm)
    job = follow(ctx, slurm)
    assert job["state"] == "queued" and job["reason"].startswith("Slurm: NODE_FAIL")
    job_scheduling.schedule_pass(ctx)
    follow(ctx, slurm)
    assert slurm.submitted == ["1.1", "1.2"]


def test_an_unreachable_cluster_moves_nothing(ctx: HubContext):
    handed(ctx)
    assert follow(ctx, Scripted(down=True))["state"] == "scheduled"
