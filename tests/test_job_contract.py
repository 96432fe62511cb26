"""The job contract between hub and agent: attempts in the desired state and the agent's
reports read back exactly as written, and broken entries refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.deploy.spec import SpecError
from aiorch.jobs.spec import load_job
from edge_agent.contract.fields import ContractError
from edge_agent.contract.job import (
    Artifact,
    JobReport,
    JobRun,
    job_entry,
    job_report_entry,
    parse_job_reports,
    parse_job_runs,
)
from edge_agent.contract.workload import Image, Volume

DIGEST = "sha256:" + "ab" * 32


def run(**changes: object) -> JobRun:
    values: dict[str, object] = {
        "attempt": "17.1",
        "job": "finetune",
        "project": "nlp",
        "image": Image("localhost/train:v1", DIGEST, 1024),
        "command": ("python3", "train.py"),
        "args": ("--epochs", "1"),
        "env": {"A": "1"},
        "secret_env": {"TOKEN": "s3cret"},
        "volumes": (Volume("/data", "/data", True),),
        "gpus": (0, 1),
        "simulated_gpus": 0,
        "cpu": 4.0,
        "memory_mib": 2048,
        "max_duration_s": 3600,
        "artifacts": ("/out/model.bin",),
        "site_artifact_limit_bytes": 1 << 30,
        "stop": None,
        "grace_s": 30,
        **changes,
    }
    return JobRun(**values)  # type: ignore[arg-type]


def test_an_attempt_reads_back_as_written():
    runs, refused = parse_job_runs({"jobs": [job_entry(run()), job_entry(run(attempt="18.2"))]})
    assert refused == {}
    assert runs == [run(), run(attempt="18.2")]
    assert runs[0].container_name == "aiorch-job-17.1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"stop": "pause"}, "stop"),
        ({"max_duration_s": 0}, "max_duration_s"),
        ({"artifacts": ["out/x"]}, "artifacts"),
        ({"artifacts": ["/out/../etc/shadow"]}, "artifacts"),
        ({"image": {"ref": "x", "digest": "md5:1", "size": 1}}, "image.digest"),
    ],
)
def test_a_broken_attempt_is_refused_by_id_with_the_field_named(change, field):
    entry = {**job_entry(run()), **change}
    runs, refused = parse_job_runs({"jobs": [entry]})
    assert runs == [] and field in refused["17.1"]


def test_an_entry_without_an_attempt_id_is_skipped():
    assert parse_job_runs({"jobs": [{"job": "x"}, "junk"]}) == ([], {})


def test_a_report_reads_back_as_written():
    report = JobReport(
        attempt="17.1",
        seq=4,
        state="exited",
        exit_code=0,
        started_at=100.0,
        finished_at=160.5,
        log_tail="epoch 1 done\n",
        log_bytes=13,
        artifacts=(Artifact("/out/model.bin", "cd" * 32, 42, "hub"),),
    )
    assert parse_job_reports({"17.1": job_report_entry(report)}) == {"17.1": report}
    assert report.final


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"state": "exploded"}, "jobs.17.1.state"),
        ({"seq": -1}, "jobs.17.1.seq"),
        ({"log_tail": "x" * (64 * 1024 + 1)}, "jobs.17.1.log_tail"),
        ({"artifacts": [{"path": "/o", "sha256": "zz", "location": "hub"}]}, "sha256"),
        ({"artifacts": [{"path": "/o", "sha256": "cd" * 32, "location": "moon"}]}, "location"),
    ],
)
def test_a_broken_report_names_its_field(change, field):
    entry = {**job_report_entry(JobReport("17.1", 1, "running")), **change}
    with pytest.raises(ContractError, match=field.replace(".", r"\.")):
        parse_job_reports({"17.1": entry})


@pytest.mark.parametrize("path", sorted(Path("examples/jobs").glob("*.yaml")), ids=str)
def test_every_example_job_is_a_valid_spec(path: Path):
    job = load_job(path.read_text())
    assert job.spec.max_duration > 0 and job.kind == "Job"


def test_a_job_mounts_each_path_once_as_a_deployment_must():
    """Jobs share the deployments' container checks (one ContainerSpec), mounts included."""
    text = """
apiVersion: aiorch.dev/v1
kind: Job
metadata: {name: twice, project: nlp}
spec:
  image: localhost/x:v1
  maxDuration: 90m
  volumes: [{hostPath: /a, mountPath: /data}, {hostPath: /b, mountPath: /data/}]
"""
    with pytest.raises(SpecError, match=r"spec\.volumes: mountPath /data is used more than once"):
        load_job(text)
    assert load_job(text.replace("/data/}", "/other}")).spec.max_duration == 5400
