"""The drift job in process: real check-mode runs of ansible-playbook on local hosts.

Hosts with `ansible_connection: local` each own a folder; the drift playbook wants one file
there. A host that matches is clean, one whose file differs has drifted, one where a task
fails or that pre-flight refuses is `unknown` with the reason, never clean.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from aiorch.hub.context import HubContext
from aiorch.hub.services import drift, fleet_view, metrics, run_history, runs, status
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from aiorch.hub.store.migrations import MIGRATIONS, m005_drift_state
from tests.fixtures_hub import Clock, HubProcess

PLAYBOOKS = Path(__file__).parent / "playbooks"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _add_host(ctx: HubContext, name: str, hostvars: dict[str, Any]) -> None:
    row = {
        "name": name,
        "site": "s1",
        "labels": json.dumps({"site": "s1"}),
        "groups": json.dumps(["s1"]),
        "vars": json.dumps(hostvars),
        "status": "active",
        "created_at": 0,
        "updated_at": 0,
    }
    ctx.store.write(lambda db: db.table("hosts").insert(row))


def _make_site(ctx: HubContext, root: Path) -> HubContext:
    """clean (file as wanted), tampered (file differs), failing (a task fails), gone (no SSH)."""
    for name, content in (
        ("clean", "desired\n"),
        ("tampered", "tampered\n"),
        ("failing", "desired\n"),
    ):
        folder = root / name
        folder.mkdir()
        (folder / "desired").write_text(content)
        (folder / "desired").chmod(0o644)
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        hostvars = {**local, "target_dir": str(folder), "fail_here": name == "failing"}
        _add_host(ctx, name, hostvars)
    _add_host(ctx, "gone", {"ansible_host": "127.0.0.1", "ansible_port": _closed_port()})
    return ctx


SETTINGS = {
    "playbooks_dir": PLAYBOOKS,
    "drift_playbook": "drift_local.yml",
    "preflight_timeout_s": 1,
}


@pytest.fixture
def site(make_context: Callable[..., HubContext], tmp_path: Path) -> HubContext:
    """A site of four hosts for a test that changes them."""
    return _make_site(make_context(**SETTINGS), tmp_path)


@dataclass
class Checked:
    ctx: HubContext
    run: dict[str, Any]
    root: Path


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checked]:
    """The site after one drift check, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("drift")
    settings = HubSettings(data_dir=root, **SETTINGS)
    ctx = HubContext(store=Store(settings.db_path).open(), settings=settings, clock=Clock())
    try:
        _make_site(ctx, root)
        yield Checked(ctx, _check(ctx), root)
    finally:
        ctx.store.close()


def _check(ctx: HubContext) -> dict[str, Any]:
    (run_id,) = drift.check_drift(ctx).values()
    runs.wait(run_id, 120)
    return runs.get_run(ctx, run_id)


def test_drift_check_records_drifted_unknown_and_clean_hosts(checked: Checked):
    assert checked.run["kind"] == "drift" and checked.run["check"] is True
    found = {f["host"]: f for f in drift.findings(checked.ctx)}
    assert sorted(found) == ["failing", "gone", "tampered"]  # clean has no finding
    tampered = found["tampered"]
    assert (tampered["state"], tampered["changed_tasks"], tampered["reason"]) == (
        "drifted",
        ["Desired file content"],
        None,
    )
    assert (found["failing"]["state"], found["failing"]["changed_tasks"]) == ("unknown", [])
    assert found["failing"]["reason"] == "failed: Fail where asked: asked to fail on failing"
    assert found["gone"]["state"] == "unknown"
    assert found["gone"]["reason"].startswith("pre-flight: ")
    assert (checked.root / "tampered" / "desired").read_text() == "tampered\n"  # check mode


def test_changes_seen_before_a_failure_are_drift(site: HubContext, tmp_path: Path):
    (tmp_path / "failing" / "desired").write_text("tampered\n")
    _check(site)
    found = {f["host"]: f for f in drift.findings(site)}["failing"]
    assert (found["state"], found["changed_tasks"]) == ("drifted", ["Desired file content"])
    assert found["reason"] == "failed: Fail where asked: asked to fail on failing"


def test_drift_findings_show_in_the_status_answer(checked: Checked):
    answer = status.overview(checked.ctx)["drift"]
    shown = {d["host"]: (d["state"], bool(d["reason"])) for d in answer}
    assert shown["gone"] == ("unknown", True) and shown["tampered"] == ("drifted", False)


def test_drift_findings_show_in_metrics_for_the_alert(checked: Checked):
    text = metrics.render(checked.ctx).decode()
    assert 'aiorch_drift_findings{host="tampered",state="drifted"} 1.0' in text
    assert 'aiorch_drift_findings{host="gone",state="unknown"} 1.0' in text
    assert 'aiorch_drift_findings{host="clean"' not in text


def test_a_later_clean_check_clears_drift_and_unknown(site: HubContext, tmp_path: Path):
    _check(site)
    for name in ("tampered", "failing"):
        (tmp_path / name / "desired").write_text("desired\n")
    site.store.write(
        lambda db: db.execute(
            "UPDATE hosts SET vars = json_set(vars, '$.fail_here', json('false')) "
            "WHERE name = 'failing'"
        )
    )
    site.store.write(
        lambda db: db.execute("UPDATE hosts SET status = 'retired' WHERE name = 'gone'")
    )
    _check(site)
    assert drift.findings(site) == []


def test_drift_found_before_stands_when_a_later_check_cannot_reach_the_host(site: HubContext):
    first = _check(site)
    unreachable = json.dumps({"ansible_host": "127.0.0.1", "ansible_port": _closed_port()})
    site.store.write(
        lambda db: db.execute("UPDATE hosts SET vars = ? WHERE name = 'tampered'", [unreachable])
    )
    _check(site)
    found = {f["host"]: f for f in drift.findings(site)}["tampered"]
    assert (found["state"], found["run_id"]) == ("drifted", first["id"])
    assert found["changed_tasks"] == ["Desired file content"]
    assert found["reason"].startswith("pre-flight: ")


def test_drift_runs_store_only_changed_and_failed_results(checked: Checked):
    assert checked.run["recap"]["clean"]["ok"] >= 2  # results happened ...
    events = run_history.run_events(checked.ctx, checked.run["id"])
    assert {e["status"] for e in events} == {"changed", "failed"}  # ... but only these stay
    assert {e["host"] for e in events} == {"tampered", "failing"}


def test_unknown_hosts_stay_eligible_for_placement_and_drifted_ones_do_not(checked: Checked):
    ctx = checked.ctx
    views = {v.name: v.drifted for v in fleet_view.host_views(ctx, ctx.store.read(), "any")}
    assert views["tampered"] is True
    assert views["gone"] is False and views["clean"] is False


@pytest.mark.e2e
def test_aiorch_status_shows_drifted_and_unknown_hosts_with_the_reason(
    checked: Checked, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    hub = HubProcess(checked.root).start()  # serves the checked site's database
    try:
        table = hub.cli("status").stdout
        answer = hub.cli_json("status")
    finally:
        hub.stop()
    states = {d["host"]: d["state"] for d in answer["drift"]}
    assert states == {"failing": "unknown", "gone": "unknown", "tampered": "drifted"}
    rows = {line.split()[1]: line for line in table.splitlines() if len(line.split()) > 2}
    assert "unknown" in rows["failing"] and "Fail where asked" in rows["failing"]
    assert "drifted" in rows["tampered"] and "Desired file content" in rows["tampered"]
    assert "unknown" in rows["gone"] and "pre-flight" in rows["gone"]


def test_drift_found_before_the_state_column_stays_drifted(tmp_path: Path):
    db = sqlite_utils.Database(tmp_path / "old.db")
    for migration in MIGRATIONS[: MIGRATIONS.index(m005_drift_state)]:
        migration(db)
    db.table("runs").insert({"id": "r1", "playbook": "site.yml", "actor": "t", "created_at": 0})
    db.table("drift").insert({"host": "h1", "run_id": "r1", "detected_at": 1.0})
    m005_drift_state(db)
    assert [(r["state"], r["reason"]) for r in db.query("SELECT * FROM drift")] == [
        ("drifted", None)
    ]
