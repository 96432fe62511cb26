"""Runs for real: the hub runs ansible-playbook over SSH on the lab's hosts and records it.

One hub for the module (its playbooks are tests/playbooks/), the session's 3-host lab
imported into it. Tests run in file order; the last one retires a host of that hub.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from aiorch.hub.services import drift, inventory
from aiorch.hub.services.auth import Principal
from aiorch.lab import Lab, wait_until
from tests.fixtures_hub import HubProcess, checkin_body, enroll_agent, make_enroll_token

pytestmark = pytest.mark.lab

PLAYBOOKS = Path(__file__).parent / "playbooks"
HOSTS = ["dc1-1", "edge1-1", "edge2-1"]
SECRET = f"tok-{uuid.uuid4().hex}"
TASKS = ["Write the marker", "Use the secret", "Read the marker back"]


@pytest.fixture(scope="module")
def hub(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with pytest.MonkeyPatch.context() as env:  # kept for restarts within the module
        env.setenv("AIORCH_PLAYBOOKS_DIR", str(PLAYBOOKS))
        env.setenv("AIORCH_DRIFT_INTERVAL_S", "0")
        # JSON logs: the secret scans below cover that format (text is covered elsewhere).
        data_dir = tmp_path_factory.mktemp("runs") / "hub"
        json_logs = ["--log-format", "json"]
        process = HubProcess(data_dir, log_level="info", serve_args=json_logs).start()
        try:
            process.cli("inventory", "import", str(lab.inventory_path))
            yield process
        finally:
            process.stop()


@pytest.fixture
def api(hub: HubProcess) -> Iterator[httpx.Client]:
    with hub.client(hub.admin_token) as client:
        yield client


def start(api: httpx.Client, playbook: str, **body: Any) -> dict[str, Any]:
    response = api.post("/runs", json={"playbook": playbook, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_run(api: httpx.Client, run_id: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> bool:
        return api.get(f"/runs/{run_id}").json()["status"] not in ("queued", "running")

    wait_until(done, timeout=timeout, what=f"run {run_id} to end", interval=0.5)
    return dict(api.get(f"/runs/{run_id}").json())


def newest_run(api: httpx.Client) -> dict[str, Any]:
    return dict(api.get("/runs", params={"limit": 1}).json()[0])


def host_file(lab: Lab, host: str, path: str) -> str:
    return lab.exec(host, ["cat", path], check=False).stdout


def sleeping(lab: Lab, host: str, seconds: int) -> bool:
    """True once sleep.yml's task runs on `host` (each test sleeps its own number)."""
    return lab.exec(host, ["pgrep", "-f", f"sleep {seconds}"], check=False).returncode == 0


def ansible_of(run_id: str) -> list[int]:
    """Processes (ansible-playbook and its forks) whose command line names the run."""
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(f"/runs/{run_id}/" in arg for arg in p.info["cmdline"] or [])
    ]


def test_run_records_every_event_in_order_and_never_the_secret(
    hub: HubProcess, api: httpx.Client, lab: Lab
):
    label = uuid.uuid4().hex[:8]
    extravars = ["-e", f"api_token={SECRET}", "-e", f"run_label={label}"]
    cli = hub.cli("provision", "write_file.yml", "--diff", *extravars)
    run = newest_run(api)
    assert run["status"] == "successful" and run["hosts"] == HOSTS
    assert "successful" in cli.stdout and all(host in cli.stdout for host in HOSTS)
    events = api.get(f"/runs/{run['id']}/events").json()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for host in HOSTS:
        mine = [e for e in events if e["host"] == host]
        assert [e["task"] for e in mine] == TASKS
        assert [e["status"] for e in mine] == ["changed", "changed", "ok"]
        # the recap is ansible's PLAY RECAP; it agrees with the events stored
        assert run["recap"][host] == {
            "ok": 3,
            "changed": 2,
            "failed": 0,
            "unreachable": 0,
            "skipped": 0,
            "rescued": 0,
            "ignored": 0,
        }
        assert host_file(lab, host, "/tmp/aiorch-test-marker") == f"written by run {label}\n"
        assert host_file(lab, host, "/tmp/aiorch-test-secret") == f"{SECRET}\n"  # it was used
    assert run["extravars"] == {"api_token": "********", "run_label": label}
    answers = [cli.stdout, cli.stderr, hub.cli("runs", "logs", run["id"]).stdout]
    for path in ("/runs", f"/runs/{run['id']}", f"/runs/{run['id']}/events", "/audit", "/status"):
        answers.append(api.get(path).text)
    assert not any(SECRET in text for text in answers)
    assert SECRET not in hub.log.read_text()
    dump = "\n".join(sqlite3.connect(hub.data_dir / "aiorch.db").iterdump())
    assert SECRET not in dump
    stored = [f.read_bytes() for f in hub.data_dir.rglob("*") if f.is_file()]
    assert not any(SECRET.encode() in content for content in stored)
    assert not (hub.data_dir / "runs" / run["id"]).exists()


def test_check_mode_changes_nothing(hub: HubProcess, api: httpx.Client, lab: Lab):
    before = {host: host_file(lab, host, "/tmp/aiorch-test-marker") for host in HOSTS}
    extravars = ["-e", "run_label=never", "-e", "api_token=x"]
    result = hub.cli("provision", "write_file.yml", "--check", *extravars, "--output", "json")
    run = json.loads(result.stdout)
    assert run["status"] == "successful" and run["check"] is True
    events = api.get(f"/runs/{run['id']}/events").json()
    would_change = {e["host"] for e in events if e["task"] == TASKS[0] and e["changed"]}
    assert would_change == set(HOSTS)
    assert {host: host_file(lab, host, "/tmp/aiorch-test-marker") for host in HOSTS} == before


def test_second_mutating_run_on_a_busy_host_is_refused(
    hub: HubProcess, api: httpx.Client, lab: Lab
):
    long = start(api, "sleep.yml", limit="edge1-1", extravars={"seconds": "118"})
    refused = api.post("/runs", json={"playbook": "noop.yml", "limit": "edge_box"})
    assert refused.status_code == 409
    assert f"edge1-1 is locked by run {long['id']}" in refused.json()["detail"]
    check = start(api, "noop.yml", limit="edge1-1", check=True)  # check runs take no locks
    wait_until(lambda: sleeping(lab, "edge1-1", 118), timeout=60, what="the long task")
    assert "canceling" in hub.cli("runs", "cancel", long["id"]).stdout
    assert wait_run(api, long["id"])["status"] == "canceled"
    assert wait_run(api, check["id"])["status"] == "successful"
    after = start(api, "noop.yml", limit="edge1-1")
    assert wait_run(api, after["id"])["status"] == "successful"
    assert ansible_of(long["id"]) == [], "no worker goes on with the task"
    lab.exec("edge1-1", ["pkill", "-f", "sleep 118"], check=False)


@pytest.mark.parametrize(
    ("limit", "hosts"),
    [
        ("label=site=edge1", ["edge1-1"]),
        ("role=edge-box", ["edge1-1", "edge2-1"]),
        ("edge_box", ["edge1-1", "edge2-1"]),
        ("dc1-1,edge2", ["dc1-1", "edge2-1"]),
    ],
)
def test_limit_resolves_hosts_groups_and_labels(api: httpx.Client, limit: str, hosts: list[str]):
    run = start(api, "noop.yml", limit=limit, check=True)
    assert run["hosts"] == hosts
    done = wait_run(api, run["id"])
    assert sorted(done["recap"]) == hosts


def test_unknown_limit_and_bad_playbook_are_refused(api: httpx.Client):
    for body, problem in (
        ({"playbook": "noop.yml", "limit": "edge9"}, "edge9"),
        ({"playbook": "../playbooks/noop.yml"}, "give a path inside playbook set aiorch"),
        ({"playbook": "missing.yml"}, "not found"),
    ):
        response = api.post("/runs", json=body)
        assert response.status_code == 422 and problem in response.json()["detail"]


def test_serial_stops_after_a_failing_first_wave(hub: HubProcess, api: httpx.Client, lab: Lab):
    for host in HOSTS:
        lab.exec(host, ["rm", "-f", "/tmp/aiorch-test-wave"])
    args = ["fail_on.yml", "--serial", "1", "-e", "fail_hosts=dc1-1"]
    result = hub.cli("provision", *args, check=False)
    assert result.returncode == 2, result.stderr
    run = newest_run(api)
    assert run["status"] == "failed" and list(run["recap"]) == ["dc1-1"]
    assert run["recap"]["dc1-1"]["failed"] == 1
    assert run["not_run"] == ["edge1-1", "edge2-1"]
    assert "stopped after wave 1 of 3" in run["message"]
    events = api.get(f"/runs/{run['id']}/events").json()
    assert {e["host"] for e in events} == {"dc1-1"}
    assert "asked to fail on dc1-1" in result.stdout
    assert all(host_file(lab, h, "/tmp/aiorch-test-wave") == "" for h in ("edge1-1", "edge2-1"))


def test_unreachable_host_is_reported_by_preflight_and_the_others_run(
    hub: HubProcess, api: httpx.Client, lab: Lab
):
    lab.faults.pause("edge2-1")
    try:
        result = hub.cli("provision", "noop.yml", check=False)
    finally:
        lab.faults.resume("edge2-1")
    run = newest_run(api)
    address = lab.host("edge2-1").address
    line = f"edge2-1: no SSH greeting within 5 s ({address}:22)"
    assert run["preflight"] == {"edge2-1": line}
    assert [ln for ln in result.stdout.splitlines() if "pre-flight edge2-1" in ln] == [
        f"pre-flight {line}"
    ]
    assert sorted(run["recap"]) == ["dc1-1", "edge1-1"]
    assert all(run["recap"][h]["ok"] == 1 and not run["recap"][h]["failed"] for h in run["recap"])
    assert run["status"] == "failed" and result.returncode == 2


def test_hub_killed_mid_run_leaves_the_run_interrupted_and_the_host_free(
    hub: HubProcess, api: httpx.Client, lab: Lab
):
    run = start(api, "sleep.yml", limit="dc1-1", extravars={"seconds": "117"})
    wait_until(lambda: sleeping(lab, "dc1-1", 117), timeout=60, what="the long task")
    hub.stop(signal.SIGKILL)
    assert ansible_of(run["id"]), "ansible-playbook outlives a killed hub"
    hub.start()
    after = api.get(f"/runs/{run['id']}").json()
    assert after["status"] == "interrupted" and after["finished_at"] is not None
    assert ansible_of(run["id"]) == []
    again = start(api, "noop.yml", limit="dc1-1")  # the lock is gone
    assert wait_run(api, again["id"])["status"] == "successful"
    lab.exec("dc1-1", ["pkill", "-f", "sleep 117"], check=False)


def test_drift_check_finds_the_host_that_changed(make_context: Any, lab: Lab):
    ctx = make_context(playbooks_dir=PLAYBOOKS, drift_playbook="drift.yml")
    inventory.import_inventory(
        ctx, lab.inventory_path.read_text(), "hosts.yml", Principal("user", "test", "admin")
    )
    for host in HOSTS:
        content = "tampered\n" if host == "edge1-1" else "desired\n"
        lab.exec(host, ["sh", "-c", f"printf '{content}' > /tmp/aiorch-test-drift"])
        lab.exec(host, ["chmod", "0644", "/tmp/aiorch-test-drift"])
    started = drift.check_drift(ctx)
    assert sorted(started) == ["dc1", "edge1", "edge2"]
    drifted = drift.findings(ctx)
    assert [(d["host"], d["state"], d["changed_tasks"]) for d in drifted] == [
        ("edge1-1", "drifted", ["Desired file content"])
    ]
    assert host_file(lab, "edge1-1", "/tmp/aiorch-test-drift") == "tampered\n"  # check mode


def test_retire_revokes_the_agent_and_leaves_the_others(
    hub: HubProcess, api: httpx.Client, lab: Lab
):
    agent = enroll_agent(hub, make_enroll_token(api, site="edge2"), "edge2-1")
    checkin = f"/agents/{agent['agent_id']}/checkin"
    with hub.client(agent["credential"]) as client:
        assert client.post(checkin, json=checkin_body()).status_code == 200
    refused = hub.cli("hosts", "retire", "edge1-1", "--wipe", check=False)
    assert refused.returncode == 1 and "yes-wipe-data" in refused.stderr
    hub.cli("hosts", "retire", "edge2-1")
    assert host_file(lab, "edge2-1", "/tmp/aiorch-test-decommissioned") == "decommissioned\n"
    statuses = {h["name"]: h["status"] for h in api.get("/hosts").json()}
    assert statuses == {"dc1-1": "active", "edge1-1": "active", "edge2-1": "retired"}
    with hub.client(agent["credential"]) as client:
        assert client.post(checkin, json=checkin_body()).status_code == 401
    assert api.get("/audit", params={"action": "host.retire"}).json()[0]["target"] == (
        "host:edge2-1"
    )
    run = start(api, "noop.yml", check=True)
    assert run["hosts"] == ["dc1-1", "edge1-1"]
    wait_run(api, run["id"])  # nothing left running for the next module
