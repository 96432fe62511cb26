"""Jobs end to end on a provisioned lab: the hub queues and places them, the agents on the lab
hosts run them with podman and report back, through failures, a cut, cancel, preemption and
an exhausted budget.

site.yml converges a fresh 3-host lab; its datacenter host dc1-1 has 4 simulated H100s (the
lab's `simulated:4xH100-80GB`), the edge boxes none. Jobs run the lab payload image's python3,
which the hub stores. Everything is driven the way an operator would: `aiorch jobs ...` and
`aiorch quota set`, and containers are read on the hosts themselves.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiorch.hub.services import clusters
from aiorch.lab import wait_until
from aiorch.lab.payload import build_payload, payload_digest, payload_ref
from aiorch.lab.site import add_slurm_group
from tests.fixtures_provision import ProvisionLab, assert_ok

pytestmark = pytest.mark.lab

DC, EDGE = "dc1-1", "edge1-1"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "jobs"
DEADLINE = 300.0  # an image download and load on a busy 2-core machine, then the job itself


@pytest.fixture(scope="module")
def converged(provision_lab: ProvisionLab) -> ProvisionLab:
    """site.yml on every host (agents back off at most 10 s: the tests cut hosts), and the
    lab's inventory in the hub so placement knows the hosts' roles."""
    result = provision_lab.run(
        "site.yml", extra={"aiorch_edge_agent_config_extra": {"max_backoff_s": 10}}
    )
    assert_ok(result)
    body = {"filename": "lab.yml", "content": provision_lab.lab.inventory_path.read_text()}
    response = provision_lab.hub.admin.post("/inventory/import", json=body)
    assert response.status_code == 200, response.text
    return provision_lab


@pytest.fixture(scope="module")
def image(converged: ProvisionLab) -> str:
    """The lab payload (python3 inside) in the hub's image store, pinned to its archive."""
    archive = build_payload("v1")
    with archive.open("rb") as fh:
        response = converged.hub.admin.post(
            "/images",
            params={"ref": payload_ref("v1")},
            headers={"Content-Type": "application/octet-stream"},
            content=iter(lambda: fh.read(1 << 20), b""),
            timeout=300,
        )
    assert response.status_code == 201, response.text
    return f"{payload_ref('v1')}@{payload_digest(archive)}"


def job_spec(name: str, image: str, script: str, **spec: Any) -> str:
    """A Job running `python3 -c script`, with more spec fields (camelCase) from `spec`."""
    body = {
        "image": image,
        "command": ["python3", "-c", textwrap.dedent(script)],
        "maxDuration": "10m",
        **spec,
    }
    doc = {"apiVersion": "aiorch.dev/v1", "kind": "Job",
           "metadata": {"name": name, "project": "lab"}, "spec": body}  # fmt: skip
    return json.dumps(doc)  # JSON is YAML


def submit(lab: ProvisionLab, tmp_path: Path, text: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    lab.hub.cli("jobs", "submit", "-f", str(path))


def show(lab: ProvisionLab, name: str) -> dict[str, Any]:
    return dict(lab.hub.cli_json("jobs", "show", name))


def reaches(lab: ProvisionLab, name: str, *wanted: str, timeout: float = DEADLINE) -> dict:
    """The job once it is in one of `wanted` states (failing fast on another final one)."""

    def there() -> dict[str, Any] | None:
        job = show(lab, name)
        finished = {"succeeded", "failed", "cancelled", "timed_out"}
        assert job["state"] in wanted or job["state"] not in finished, job
        return job if job["state"] in wanted else None

    return wait_until(there, timeout=timeout, what=f"job {name} {' or '.join(wanted)}", interval=1)


def job_containers(lab: ProvisionLab, host: str, attempt: str) -> list[dict[str, Any]]:
    argv = ["podman", "ps", "--all", "--filter", f"name=aiorch-job-{attempt}", "--format", "json"]
    return list(json.loads(lab.lab.exec(host, argv).stdout or "[]"))


def test_a_gpu_job_runs_to_completion_with_exit_code_logs_and_artifact(
    converged: ProvisionLab, image: str, tmp_path: Path
) -> None:
    script = """
        import json, os
        print("epoch 1 loss 0.5", flush=True)
        os.makedirs("/out", exist_ok=True)
        json.dump({"loss": 0.5}, open("/out/metrics.json", "w"))
    """
    spec = job_spec("train", image, script, resources={"gpus": 2}, artifacts=["/out/metrics.json"])
    submit(converged, tmp_path, spec)
    job = reaches(converged, "train", "succeeded")
    attempt = job["attempt"]
    assert (attempt["host"], attempt["simulated_gpus"], job["exit_code"]) == (DC, 2, 0), job
    assert job["gpu_hours_used"] > 0 and job["gpu_hours_reserved"] == 0
    logs = converged.hub.cli("jobs", "logs", "train").stdout
    assert "epoch 1 loss 0.5" in logs
    (artifact,) = attempt["artifacts"]
    assert artifact["location"] == "hub" and artifact["path"] == "/out/metrics.json"
    got = converged.hub.admin.get(f"/jobs/train/artifacts/{artifact['sha256']}")
    assert got.status_code == 200 and json.loads(got.content) == {"loss": 0.5}
    assert hashlib.sha256(got.content).hexdigest() == artifact["sha256"]
    assert job_containers(converged, DC, attempt["id"]) == [], "removed once reported"


def test_a_failing_job_retries_then_fails_with_its_reason(
    converged: ProvisionLab, image: str, tmp_path: Path
) -> None:
    retry = {"on": ["error"], "limit": 1, "backoff": 1}
    submit(converged, tmp_path, job_spec("flaky", image, "raise SystemExit(3)", retry=retry))
    job = reaches(converged, "flaky", "failed")
    assert (job["attempts"], job["exit_code"]) == (2, 3), job
    assert "3" in job["reason"] and "retr" in job["reason"], job["reason"]
    assert [e["to"] for e in job["events"]].count("scheduled") == 2


def test_a_job_that_ends_during_a_cut_reports_after_the_heal_without_a_second_attempt(
    converged: ProvisionLab, image: str, tmp_path: Path
) -> None:
    script = "import time; time.sleep(25); print('done while cut off', flush=True)"
    placement = {"selector": {"host": EDGE}}
    submit(converged, tmp_path, job_spec("offline", image, script, placement=placement))
    attempt = reaches(converged, "offline", "running")["attempt"]["id"]
    converged.lab.faults.cut(EDGE)
    try:
        wait_until(
            lambda: not show(converged, "offline")["confirmed"],
            timeout=120,
            what="the hub showing the job running (unconfirmed)",
        )
        assert show(converged, "offline")["state"] == "running", "never lost within the window"
        wait_until(
            lambda: all(c["State"] != "running" for c in job_containers(converged, EDGE, attempt)),
            timeout=120,
            what="the job ending on the cut-off host",
        )
    finally:
        converged.lab.faults.heal(EDGE)
    job = reaches(converged, "offline", "succeeded")
    assert (job["attempts"], job["attempt"]["id"]) == (1, attempt), job
    assert "node_lost" not in [e["to"] for e in job["events"]]
    assert "done while cut off" in converged.hub.cli("jobs", "logs", "offline").stdout


def test_cancel_stops_the_container(converged: ProvisionLab, image: str, tmp_path: Path) -> None:
    placement = {"selector": {"host": EDGE}}
    sleeper = job_spec("sleeper", image, "import time; time.sleep(600)", placement=placement)
    submit(converged, tmp_path, sleeper)
    attempt = reaches(converged, "sleeper", "running")["attempt"]["id"]
    assert [c["State"] for c in job_containers(converged, EDGE, attempt)] == ["running"]
    converged.hub.cli("jobs", "cancel", "sleeper")
    job = reaches(converged, "sleeper", "cancelled", timeout=120)
    assert job["attempts"] == 1
    wait_until(
        lambda: job_containers(converged, EDGE, attempt) == [],
        timeout=60,
        what="the cancelled job's container gone",
    )


def test_preemption_requeues_the_lower_priority_job(
    converged: ProvisionLab, image: str, tmp_path: Path
) -> None:
    every_gpu = {"gpus": 4}
    low = job_spec("low", image, "import time; time.sleep(600)", resources=every_gpu,
                   preemptible=True, priority=10, gracePeriod=5)  # fmt: skip
    submit(converged, tmp_path, low)
    first = reaches(converged, "low", "running")["attempt"]["id"]
    high = job_spec("high", image, "print('urgent')", resources=every_gpu, priority=90)
    submit(converged, tmp_path, high)
    assert reaches(converged, "high", "succeeded")["attempt"]["host"] == DC
    low_now = show(converged, "low")
    events = [e["to"] for e in low_now["events"]]
    assert "preempted" in events and events[events.index("preempted") + 1] == "queued", events
    assert job_containers(converged, DC, first) == [], "the preempted attempt's container"
    # Requeued with retries left: it runs again on the freed GPUs, as a new attempt.
    again = reaches(converged, "low", "running")
    assert again["attempt"]["id"] != first and again["attempts"] == 2
    converged.hub.cli("jobs", "cancel", "low")
    reaches(converged, "low", "cancelled", timeout=120)


def test_an_exhausted_budget_keeps_a_job_queued_with_the_reason(
    converged: ProvisionLab, image: str, tmp_path: Path
) -> None:
    converged.hub.cli("quota", "set", "lab", "--gpu-hours", "1", "--period", "month")
    try:
        big = job_spec("big", image, "print(1)", resources={"gpus": 2}, maxDuration="1h")
        submit(converged, tmp_path, big)

        def reasoned() -> dict[str, Any] | None:
            job = show(converged, "big")
            return job if "budget" in (job["reason"] or "") else None

        job = wait_until(reasoned, timeout=60, what="the budget reason on job big")
        assert job["state"] == "queued" and job["attempts"] == 0, job
        converged.hub.cli("jobs", "cancel", "big")
    finally:
        converged.hub.cli("quota", "set", "lab")  # no limits again


# ---- Slurm (playbooks/slurm.yml) on dc1-1 and edge1-1 ----------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster(converged: ProvisionLab) -> dict[str, str]:
    """slurm.yml on the lab's `aiorch_slurm` group (added to this module's inventory, as
    write_site_inventory adds it), with the hub's own keys, as the hub passes them to the runs
    it starts (its JWT key is the one it mints slurmrestd tokens from); returns those vars."""
    keys = clusters.key_paths(converged.hub.data_dir)
    extra = {
        "aiorch_slurm_munge_key_file": str(keys[clusters.MUNGE_KEY]),
        "aiorch_slurm_jwt_key_file": str(keys[clusters.JWT_KEY]),
    }
    tree = yaml.safe_load(converged.inventory.read_text())
    add_slurm_group(tree, [host.name for host in converged.lab.hosts])
    converged.inventory.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert_ok(converged.run("slurm.yml", extra=extra))
    return extra


def test_slurm_converges_to_a_cluster_that_runs_on_both_nodes(
    converged: ProvisionLab, slurm_cluster: dict[str, str]
) -> None:
    again = converged.run("slurm.yml", extra=slurm_cluster)
    assert_ok(again)
    changed = {host: r["changed"] for host, r in again.recap.items() if r["changed"]}
    assert changed == {}, again.output[-6000:]
    checked = converged.run("slurm.yml", extra=slurm_cluster, check=True)
    assert_ok(checked)
    changed = {host: r["changed"] for host, r in checked.recap.items() if r["changed"]}
    assert changed == {}, checked.output[-6000:]
    assert set(again.recap) == {DC, EDGE}  # site.yml's third host is no Slurm node

    srun = ["runuser", "-u", "aiorch-job", "--", "srun", "-N2", "hostname"]
    assert sorted(converged.lab.exec(DC, srun).stdout.split()) == [DC, EDGE]
    # slurmrestd on the controller's loopback only, and on no other node.
    listening = converged.lab.exec(DC, ["ss", "-Hltn", "sport = :6820"]).stdout.split()
    assert "127.0.0.1:6820" in listening and "0.0.0.0:6820" not in listening, listening
    assert converged.lab.exec(EDGE, ["ss", "-Hltn", "sport = :6820"]).stdout.strip() == ""


def test_a_two_node_job_runs_through_slurm_and_its_log_names_both_nodes(
    converged: ProvisionLab, slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    """examples/jobs/two-node.yaml through `aiorch jobs submit`: the hub, told of the lab's
    `aiorch_slurm` group by its inventory, admits it and hands it to the cluster through
    slurmrestd (over SSH, with a token it mints from its own key); Slurm runs `hostname` on
    both nodes, and `aiorch jobs logs` shows both names."""
    body = {"filename": "lab.yml", "content": converged.inventory.read_text()}
    response = converged.hub.admin.post("/inventory/import", json=body)
    assert response.status_code == 200, response.text
    submit(converged, tmp_path, (EXAMPLES / "two-node.yaml").read_text())
    try:
        job = reaches(converged, "two-node", "succeeded")
    except AssertionError as failed:
        said = converged.hub.cli("jobs", "logs", "two-node", check=False).stdout
        raise AssertionError(f"{failed}\njob log:\n{said}") from None
    attempt = job["attempt"]
    assert attempt["backend"] == "slurm" and attempt["cluster_job"].startswith("lab/"), job
    assert attempt["host"] is None and job["exit_code"] == 0
    logs = converged.hub.cli("jobs", "logs", "two-node").stdout
    assert sorted(logs.split()) == [DC, EDGE], logs
    # A figure for the closing note, read from the stored record (not a timed assertion):
    # submit to Slurm's own start time of the job, on the same clock (the lab's hosts share it).
    started = attempt["started_at"] - job["submitted_at"]
    print(f"\nSlurm submit-to-running: {started:.1f} s (scheduling pass every 5 s)")
