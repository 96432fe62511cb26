"""Runs without the lab: limit resolution, redaction, locks, waves and recovery, in process.

Runs that really execute here use `ansible_connection: local` hosts (no SSH, no network),
so the whole path (ansible-runner, events, recap, locks) is exercised in a few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from aiorch.endpoint import CA_FILE
from aiorch.errors import Conflict, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.jobs import register_jobs
from aiorch.hub.services import (
    drift,
    enrollment,
    redaction,
    retire,
    run_history,
    run_processes,
    runs,
    status,
)
from aiorch.hub.services.run_events import EventBatcher, error_text, event_row
from aiorch.hub.services.targets import resolve_limit
from aiorch.lab import wait_until
from tests.fixtures_hub import fresh_csr

PLAYBOOKS = Path(__file__).parent / "playbooks"
SECRET = "unit-s3cret-4242"


@pytest.fixture
def ctx(make_context: Callable[..., HubContext]) -> HubContext:
    return make_context(playbooks_dir=PLAYBOOKS, preflight_timeout_s=1)


def add_host(ctx: HubContext, name: str, **fields: Any) -> None:
    row = {
        "name": name,
        "site": fields.get("site"),
        "role": fields.get("role"),
        "labels": json.dumps(fields.get("labels", {})),
        "groups": json.dumps(fields.get("groups", [])),
        "vars": json.dumps(fields.get("vars", {})),
        "status": fields.get("status", "active"),
        "created_at": 0,
        "updated_at": 0,
    }
    ctx.store.write(lambda db: db.table("hosts").insert(row))


def add_group(ctx: HubContext, name: str, children: list[str]) -> None:
    row = {"name": name, "vars": "{}", "children": json.dumps(children)}
    ctx.store.write(lambda db: db.table("inventory_groups").insert(row))


@pytest.fixture
def fleet(ctx: HubContext) -> HubContext:
    """The lab's layout, a retired host and a host that only enrolled (no inventory labels)."""
    for name, site, role in (
        ("dc1-1", "dc1", "gpu-server"),
        ("edge1-1", "edge1", "edge-box"),
        ("edge2-1", "edge2", "edge-box"),
    ):
        groups = [site, role.replace("-", "_")]
        add_host(
            ctx, name, site=site, role=role, groups=groups, labels={"site": site, "role": role}
        )
    add_host(ctx, "old-1", site="edge1", groups=["edge1"], status="retired")
    add_host(ctx, "enrolled-1", site="edge2")
    add_group(ctx, "edge", ["edge1", "edge2"])
    return ctx


@pytest.fixture
def local_hosts(ctx: HubContext, tmp_path: Path) -> list[str]:
    """Three hosts Ansible runs on locally, each writing into its own folder."""
    names = ["local1", "local2", "local3"]
    for name in names:
        (tmp_path / name).mkdir()
        hostvars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "target_dir": str(tmp_path / name),
        }
        add_host(ctx, name, groups=["locals"], vars=hostvars)
    return names


@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Runs are created (row and locks) but never executed; the launch arguments are kept."""
    launched: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runs, "_launch", lambda *args: launched.append(args))
    return launched


def finished(ctx: HubContext, run: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    runs.wait(run["id"], timeout)
    return runs.get_run(ctx, run["id"])


def locks(ctx: HubContext) -> dict[str, str]:
    return {r["host"]: r["run_id"] for r in ctx.store.read().query("SELECT * FROM host_locks")}


# ---- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "hosts"),
    [
        (None, ["dc1-1", "edge1-1", "edge2-1", "enrolled-1"]),
        ("all", ["dc1-1", "edge1-1", "edge2-1", "enrolled-1"]),
        ("dc1-1", ["dc1-1"]),
        ("edge_box", ["edge1-1", "edge2-1"]),
        ("edge", ["edge1-1", "edge2-1"]),  # a parent group: its children's hosts
        ("label=site=edge2", ["edge2-1", "enrolled-1"]),  # the site column counts as a label
        ("site=edge2", ["edge2-1", "enrolled-1"]),
        ("role=edge-box", ["edge1-1", "edge2-1"]),
        ("dc1-1, edge2", ["dc1-1", "edge2-1"]),
    ],
)
def test_limit_resolution(fleet: HubContext, limit: str | None, hosts: list[str]):
    assert resolve_limit(fleet.store.read(), limit) == hosts


@pytest.mark.parametrize(
    ("limit", "problem"),
    [("nope", "nope: matches no host"), ("site=nowhere", "matches no"), ("old-1", "retired")],
)
def test_limit_that_matches_nothing_is_refused(fleet: HubContext, limit: str, problem: str):
    with pytest.raises(InvalidInput, match=problem):
        resolve_limit(fleet.store.read(), limit)


@pytest.mark.parametrize("name", ["../write_file.yml", "/etc/passwd", "missing.yml", "x.txt", " "])
def test_playbook_must_be_an_existing_yaml_file_inside_the_folder(ctx: HubContext, name: str):
    with pytest.raises(InvalidInput):
        runs.targets.playbook_path(PLAYBOOKS, name)
    assert runs.targets.playbook_path(PLAYBOOKS, "noop.yml") == PLAYBOOKS / "noop.yml"


# ---- redaction -------------------------------------------------------------------------------


def test_secret_extravars_are_found_nested_and_masked():
    extravars = {"api_token": "tok-1", "db": {"password": 1234, "host": "db1"}, "note": "tok-1!"}
    assert redaction.secret_values(extravars) == ["tok-1", "1234"]
    assert redaction.mask_extravars(extravars) == {
        "api_token": "********",
        "db": {"password": "********", "host": "db1"},
        "note": "********!",
    }


def test_no_log_results_are_masked_wherever_they_are_nested():
    res = {"results": [{"_ansible_no_log": True, "item": "x", "stdout": "y"}, {"item": "z"}]}
    assert redaction.scrub(res, []) == {
        "results": [
            {"_ansible_no_log": True, "item": "********", "stdout": "********"},
            {"item": "z"},
        ]
    }


def _event(kind: str, res: dict[str, Any], stdout: str = "", task: str = "t") -> dict[str, Any]:
    data = {"host": "h1", "task": task, "resolved_action": "ansible.builtin.copy", "res": res}
    data |= {"duration": 1.5}
    return {
        "event": kind,
        "stdout": stdout,
        "created": "2026-01-01T00:00:00+00:00",
        "event_data": data,
    }


def test_event_rows_carry_status_and_no_secret():
    censored = _event("runner_on_ok", {"censored": "hidden"}, stdout="changed: [h1]")
    row = event_row(censored, [])
    assert row is not None and (row["status"], row["changed"]) == ("changed", 1)
    leaky = _event("runner_on_failed", {"msg": f"bad {SECRET}"}, task=f"use {SECRET}")
    row = event_row(leaky, [SECRET])
    assert row is not None and row["status"] == "failed"
    assert SECRET not in json.dumps(row) and "********" in row["res"]
    assert event_row({"event": "playbook_on_task_start"}, []) is None
    error = {"event": "verbose", "stdout": f"ERROR! no such file {SECRET}"}
    assert error_text(error, [SECRET]) == "ERROR! no such file ********"


def test_events_are_written_in_batches_in_order(ctx: HubContext, monkeypatch: pytest.MonkeyPatch):
    ctx.store.write(
        lambda db: db.table("runs").insert(
            {"id": "r1", "playbook": "x.yml", "actor": "t", "created_at": 0}
        )
    )
    writes = []
    real_write = ctx.store.write
    monkeypatch.setattr(ctx.store, "write", lambda op: writes.append(1) or real_write(op))
    batcher = EventBatcher(ctx.store, "r1", interval=0.2, max_rows=200)
    for i in range(1000):
        row = {"ts": i, "host": "h", "task": f"t{i}", "action": "a", "status": "ok"}
        batcher.add(row | {"changed": 0, "duration": 0, "res": "{}"})
    batcher.close()
    events = run_history.run_events(ctx, "r1", limit=5000)
    assert [e["seq"] for e in events] == list(range(1, 1001))
    assert [e["task"] for e in events] == [f"t{i}" for i in range(1000)]
    assert len(writes) <= 10, "one transaction per batch, not per event"
    assert [e["seq"] for e in run_history.run_events(ctx, "r1", after_seq=998)] == [999, 1000]


# ---- locks and recovery ----------------------------------------------------------------------


def test_one_mutating_run_per_host(fleet: HubContext, no_launch: list[tuple[Any, ...]]):
    first = runs.start_run(fleet, runs.RunRequest("noop.yml", limit="dc1-1,edge1-1"), "user:a")
    assert locks(fleet) == {"dc1-1": first["id"], "edge1-1": first["id"]}
    with pytest.raises(Conflict) as refused:
        runs.start_run(fleet, runs.RunRequest("noop.yml", limit="edge_box"), "user:b")
    assert f"edge1-1 is locked by run {first['id']}" in str(refused.value)
    assert "dc1-1" not in str(refused.value)
    # check mode takes no locks, and other hosts are free
    runs.start_run(fleet, runs.RunRequest("noop.yml", limit="edge1-1", check=True), "user:b")
    other = runs.start_run(fleet, runs.RunRequest("noop.yml", limit="edge2-1"), "user:b")
    assert locks(fleet)["edge2-1"] == other["id"]
    assert len(run_history.list_runs(fleet)) == 3


def test_hub_start_marks_left_over_runs_interrupted(
    fleet: HubContext, no_launch: list[tuple[Any, ...]]
):
    run = runs.start_run(fleet, runs.RunRequest("noop.yml", limit="dc1-1"), "user:a")
    run_dir = fleet.settings.runs_dir / run["id"]
    run_dir.mkdir(parents=True)
    # what a killed hub leaves behind: an ansible-playbook naming the run's folder
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", str(run_dir / "inventory.yml")],
        start_new_session=True,
    )
    try:
        assert run_processes.recover_interrupted(fleet) == [run["id"]]
        assert leftover.wait(timeout=10) == -9
    finally:
        leftover.kill()
    after = runs.get_run(fleet, run["id"])
    assert after["status"] == "interrupted" and "stopped while the run" in after["message"]
    assert locks(fleet) == {} and not run_dir.exists()
    runs.start_run(fleet, runs.RunRequest("noop.yml", limit="dc1-1"), "user:a")  # free again


# ---- real runs on local hosts ----------------------------------------------------------------


def test_local_run_stores_ordered_events_a_recap_and_no_secret(
    ctx: HubContext, local_hosts: list[str], tmp_path: Path
):
    req = runs.RunRequest("write_file.yml", extravars={"api_token": SECRET, "run_label": "u1"})
    run = runs.start_run(ctx, req, "user:test")
    assert set(locks(ctx)) == set(local_hosts)
    done = finished(ctx, run)
    assert done["status"] == "successful", done["message"]
    assert done["extravars"] == {"api_token": "********", "run_label": "u1"}
    events = run_history.run_events(ctx, run["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    tasks = ["Write the marker", "Use the secret", "Read the marker back"]
    for host in local_hosts:
        assert [e["task"] for e in events if e["host"] == host] == tasks
        mine = [e for e in events if e["host"] == host]
        expected = {"ok": len(mine), "changed": sum(e["changed"] for e in mine)}
        assert {k: done["recap"][host][k] for k in expected} == expected
        assert (tmp_path / host / "aiorch-test-secret").read_text() == f"{SECRET}\n"
        # ansible-runner censors the no_log task's whole result
        assert set(mine[1]["res"]) == {"censored"} and mine[1]["status"] == "changed"
    assert done["recap"]["local1"] == {
        "ok": 3,
        "changed": 2,
        "failed": 0,
        "unreachable": 0,
        "skipped": 0,
        "rescued": 0,
        "ignored": 0,
    }
    dump = "\n".join(ctx.store.read().conn.iterdump())
    assert SECRET not in dump
    assert locks(ctx) == {} and not (ctx.settings.runs_dir / run["id"]).exists()


def test_serial_waves_stop_after_a_failing_wave(ctx: HubContext, local_hosts: list[str]):
    req = runs.RunRequest("fail_on.yml", serial=1, extravars={"fail_hosts": "local1"})
    done = finished(ctx, runs.start_run(ctx, req, "user:test"))
    assert done["status"] == "failed"
    assert set(done["recap"]) == {"local1"} and done["recap"]["local1"]["failed"] == 1
    assert done["not_run"] == ["local2", "local3"]
    assert "stopped after wave 1 of 3" in done["message"]
    # a ratio of 1 lets every wave run
    req = runs.RunRequest("fail_on.yml", serial=2, max_fail_ratio=1.0, extravars=req.extravars)
    done = finished(ctx, runs.start_run(ctx, req, "user:test"))
    assert set(done["recap"]) == set(local_hosts) and done["status"] == "failed"
    assert done["recap"]["local3"]["failed"] == 0


def test_a_run_gets_the_hub_ca_and_cannot_name_another_file(
    ctx: HubContext, local_hosts: list[str], tmp_path: Path
):
    """Every run names the hub's CA bundle (DATA_DIR/ca.pem) to its playbook as
    `aiorch_hub_ca_file` (the roles install it on hosts); a run's own extra vars may not name
    it (nor any other hub file the roles copy), so it cannot point at another file."""
    (ctx.settings.data_dir / CA_FILE).write_text("the hub's CA\n")
    elsewhere = tmp_path / "not-the-ca.key"
    elsewhere.write_text("a file of the hub's machine\n")
    refused = runs.RunRequest(
        "hub_ca.yml", limit=local_hosts[0], extravars={"aiorch_hub_ca_file": str(elsewhere)}
    )
    with pytest.raises(InvalidInput, match="extra vars aiorch_hub_ca_file"):
        runs.start_run(ctx, refused, "user:test")
    run = finished(
        ctx, runs.start_run(ctx, runs.RunRequest("hub_ca.yml", limit=local_hosts[0]), "user:test")
    )
    assert run["status"] == "successful", run["message"]
    assert (tmp_path / local_hosts[0] / "hub-ca.pem").read_text() == "the hub's CA\n"


def test_a_playbook_that_does_not_load_fails_with_ansibles_reason(
    ctx: HubContext, local_hosts: list[str]
):
    done = finished(ctx, runs.start_run(ctx, runs.RunRequest("broken.yml"), "user:test"))
    assert done["status"] == "failed" and done["recap"] == {}
    assert "couldn't resolve module/action 'no.such.module'" in done["message"]
    assert done["not_run"] == local_hosts and locks(ctx) == {}


def _ansible_processes(run_id: str) -> int:
    """ansible-playbook and its workers: their command lines name the run's folder."""
    return sum(
        run_id in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    )


@pytest.mark.parametrize("how", ["cancel", "hub stops"])
def test_stopping_a_run_kills_ansible_and_frees_its_hosts(
    ctx: HubContext, local_hosts: list[str], how: str
):
    req = runs.RunRequest("sleep.yml", limit="local1", extravars={"seconds": "60"})
    run = runs.start_run(ctx, req, "user:test")
    # a worker running the task (it has a process group of its own) as well as the main one
    wait_until(lambda: _ansible_processes(run["id"]) >= 2, timeout=30, what="the task to run")
    started = time.monotonic()
    if how == "cancel":
        runs.cancel_run(ctx, run["id"], "user:test")
        done = finished(ctx, run, timeout=30)
        assert done["status"] == "canceled"
    else:
        runs.stop_all(ctx)
        done = runs.get_run(ctx, run["id"])
        assert done["status"] == "interrupted"
    assert time.monotonic() - started < 20
    assert locks(ctx) == {} and _ansible_processes(run["id"]) == 0
    with pytest.raises(Conflict):
        runs.cancel_run(ctx, run["id"], "user:test")


# ---- drift, retire, jobs -----------------------------------------------------------------------


def _finished_run(ctx: HubContext, run_id: str, recap: dict[str, dict[str, int]]) -> None:
    def op(db: Any) -> None:
        db.table("runs").insert(
            {"id": run_id, "playbook": "site.yml", "actor": "t", "created_at": 0}
        )
        for seq, host in enumerate(h for h, c in recap.items() if c.get("changed")):
            event = {"run_id": run_id, "seq": seq + 1, "ts": 0, "host": host}
            db.table("run_events").insert(
                event | {"task": "Desired file", "status": "changed", "changed": 1}
            )

    ctx.store.write(op)
    zero = dict.fromkeys(("ok", "changed", "failed", "unreachable", "skipped"), 0)
    full = {host: zero | counts for host, counts in recap.items()}
    run = {"id": run_id, "hosts": list(recap), "recap": full, "finished_at": 5.0}
    run |= {"preflight": {}, "status": "successful", "message": None}
    ctx.store.write(lambda db: drift.record_drift(db, run))


def test_drift_is_recorded_and_cleared(fleet: HubContext):
    _finished_run(fleet, "r1", {"dc1-1": {"ok": 1, "changed": 1}, "edge1-1": {"ok": 1}})
    assert [(d["host"], d["state"], d["changed_tasks"]) for d in drift.findings(fleet)] == [
        ("dc1-1", "drifted", ["Desired file"])
    ]
    assert status.overview(fleet)["drift"][0]["host"] == "dc1-1"
    _finished_run(fleet, "r2", {"dc1-1": {"ok": 1}, "edge1-1": {"ok": 1}})
    assert drift.findings(fleet) == []


def test_retire_revokes_the_agent_and_keeps_the_host(
    fleet: HubContext, no_launch: list[tuple[Any, ...]]
):
    token = enrollment.create_token(fleet, "edge1", 3600, 1, "user:test")["token"]
    enrolled = enrollment.enroll(fleet, token, fresh_csr(), {"hostname": "edge1-1"}, "1")
    agent_id = enrolled["agent_id"]
    with pytest.raises(InvalidInput, match="yes-wipe-data"):
        retire.retire_host(fleet, "edge1-1", "user:test", wipe=True)
    for outcome, retired in (("failed", False), ("successful", True)):
        run = retire.retire_host(fleet, "edge1-1", "user:test")
        assert run["kind"] == "retire" and run["hosts"] == ["edge1-1"]
        hook = no_launch[-1][-1]
        runs._finish(fleet, run["id"], runs._Outcome(status=outcome), hook)
        host = fleet.store.read().execute("SELECT status FROM hosts WHERE name = 'edge1-1'")
        assert (host.fetchone()[0] == "retired") is retired
    revoked = fleet.store.read().execute("SELECT revoked_at FROM agents WHERE id = ?", [agent_id])
    assert revoked.fetchone()[0] is not None
    assert "edge1-1" not in resolve_limit(fleet.store.read(), None)
    with pytest.raises(Conflict, match="already retired"):
        retire.retire_host(fleet, "edge1-1", "user:test")
    audit = [r["action"] for r in fleet.store.read().query("SELECT action FROM audit_log")]
    assert "host.retire" in audit and locks(fleet) == {}


@pytest.mark.parametrize(("interval", "registered"), [(3600.0, True), (0.0, False)])
def test_drift_job_is_registered_unless_disabled(
    make_context: Callable[..., HubContext], interval: float, registered: bool
):
    scheduler = BackgroundScheduler()
    register_jobs(scheduler, make_context(drift_interval_s=interval))
    assert ("drift-check" in {j.id for j in scheduler.get_jobs()}) is registered
