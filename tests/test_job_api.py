"""Jobs through the real hub's routes and the `aiorch` CLI: clear 4xx and one-line errors
with non-zero exits on bad input, list/show/logs/cancel, quotas with budgets, /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures_hub import HubProcess

IMAGE = "localhost/aiorch-job:v1"
OCTET = {"Content-Type": "application/octet-stream"}
JOB = """apiVersion: aiorch.dev/v1
kind: Job
metadata: {{name: {name}, project: default}}
spec:
  image: {image}
  command: [python, train.py]
  resources: {{gpus: {gpus}}}
  maxDuration: {duration}
"""


def job(name: str, gpus: int = 1, duration: str = "1h", image: str = IMAGE) -> str:
    return JOB.format(name=name, gpus=gpus, duration=duration, image=image)


@pytest.fixture(scope="module", autouse=True)
def image(shared_hub: HubProcess) -> None:
    with shared_hub.client(shared_hub.admin_token) as admin:
        response = admin.post("/images", params={"ref": IMAGE}, content=b"job", headers=OCTET)
        assert response.status_code in (200, 201), response.text


def test_submit_answers_422_one_line_per_wrong_field(admin: httpx.Client):
    response = admin.post("/jobs", json={"spec": job("bad", gpus=-1, duration="soon")})
    assert response.status_code == 422, response.text
    text = response.text
    assert "spec.resources.gpus" in text and "spec.maxDuration" in text
    missing = admin.post("/jobs", json={"spec": job("noimage", image="localhost/nope:v1")})
    assert missing.status_code == 422 and "spec.image" in missing.text


def test_submit_list_show_logs_cancel(admin: httpx.Client):
    created = admin.post("/jobs", json={"spec": job("api-a", gpus=64)})
    assert created.status_code == 201, created.text
    assert (created.json()["state"], created.json()["reason"]) == ("queued", "submitted")
    assert admin.post("/jobs", json={"spec": job("api-a")}).status_code == 409
    names = [j["name"] for j in admin.get("/jobs", params={"state": "queued"}).json()]
    assert "api-a" in names
    assert admin.get("/jobs", params={"state": "nonsense"}).status_code == 422
    shown = admin.get("/jobs/api-a").json()
    assert shown["events"][0]["to"] == "queued" and shown["confirmed"] is True
    assert admin.get("/jobs/api-a/logs").json()["log_tail"] == ""
    assert admin.get("/jobs/nope").status_code == 404
    cancelled = admin.post("/jobs/api-a/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = admin.post("/jobs/api-a/cancel")
    assert again.status_code == 409 and "already cancelled" in again.text


def test_quota_takes_a_gpu_hour_budget(admin: httpx.Client, shared_hub: HubProcess):
    body = {"max_gpus": 4, "gpu_hours": 12.5, "budget_period": "week"}
    answer = admin.put("/quotas/default", json=body)
    assert answer.status_code == 200 and answer.json()["gpu_hours"] == 12.5
    bad = admin.put("/quotas/default", json={"gpu_hours": 1, "budget_period": "year"})
    assert bad.status_code == 422 and "budget_period" in bad.text
    alone = admin.put("/quotas/default", json={"budget_period": "day"})
    assert alone.status_code == 422 and "gpu_hours" in alone.text
    with shared_hub.client(shared_hub.admin_token, root=True) as root:
        text = root.get("/metrics").text
    assert 'aiorch_project_gpu_hours_budget{period="week",project="default"} 12.5' in text
    assert "aiorch_jobs{" in text
    budget = admin.get("/projects/default").json()["budget"]
    assert (budget["gpu_hours"], budget["budget_period"]) == (12.5, "week")
    assert budget["gpu_hours_left"] == 12.5 - budget["gpu_hours_counted"]


def test_cli_jobs_commands(shared_hub: HubProcess, tmp_path: Path):
    spec = tmp_path / "job.yaml"
    spec.write_text(job("cli-a", gpus=64))
    assert "would be queued" in shared_hub.cli("plan", "-f", str(spec)).stdout
    shared_hub.cli("apply", "-f", str(spec))
    shown = shared_hub.cli_json("jobs", "show", "cli-a")
    # "submitted", or already the scheduling pass's reason for waiting (it runs every 5 s).
    assert shown["state"] == "queued" and shown["reason"], shown
    assert "cli-a" in shared_hub.cli("jobs", "list", "--state", "queued").stdout
    again = shared_hub.cli("jobs", "submit", "-f", str(spec), check=False)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1
    assert "exists" in again.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(job("cli-bad", gpus=-1))
    refused = shared_hub.cli("jobs", "submit", "-f", str(bad), check=False)
    assert refused.returncode != 0 and "spec.resources.gpus" in refused.stderr
    assert "Traceback" not in refused.stderr
    absent = shared_hub.cli("jobs", "submit", "-f", str(tmp_path / "none.yaml"), check=False)
    assert absent.returncode != 0 and len(absent.stderr.strip().splitlines()) == 1
    listed = shared_hub.cli("jobs", "list", "--state", "bogus", check=False)
    assert listed.returncode != 0 and "Traceback" not in listed.stderr
    assert "cancelled" in shared_hub.cli("jobs", "cancel", "cli-a").stdout
    unknown = shared_hub.cli("jobs", "cancel", "no-such-job", check=False)
    assert unknown.returncode != 0 and "no job named no-such-job" in unknown.stderr
    quota = shared_hub.cli_json("quota", "set", "default", "--gpu-hours", "3", "--period", "day")
    assert (quota["gpu_hours"], quota["budget_period"]) == (3, "day")
