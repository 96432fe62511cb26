"""Bounded growth: each retention job removes what has aged out and keeps what is live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiorch.hub.context import HubContext
from aiorch.hub.services import retention
from aiorch.hub.settings import HubSettings


def test_settings_read_every_field_from_aiorch_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AIORCH_PLAYBOOKS_DIR", str(tmp_path))
    monkeypatch.setenv("AIORCH_DRIFT_INTERVAL_S", "0")
    monkeypatch.setenv("AIORCH_DRIFT_PLAYBOOK", "check.yml")
    monkeypatch.setenv("AIORCH_RAW_RETENTION_S", "60")
    settings = HubSettings(data_dir=tmp_path)
    assert (settings.playbooks_dir, settings.drift_interval_s) == (tmp_path, 0)
    assert (settings.drift_playbook, settings.raw_retention_s) == ("check.yml", 60)
    assert HubSettings(data_dir=tmp_path, raw_retention_s=5).raw_retention_s == 5, "code wins"


def test_settings_treat_an_empty_env_value_as_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("AIORCH_DRIFT_INTERVAL_S", "")
    monkeypatch.setenv("AIORCH_PLAYBOOKS_DIR", "")
    settings = HubSettings(data_dir=tmp_path)
    assert settings.drift_interval_s == 3600
    assert settings.playbooks_dir.name == "playbooks"


def test_settings_refuse_a_bad_env_value_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AIORCH_RAW_RETENTION_S", "-1")
    with pytest.raises(ValueError, match="raw_retention_s"):
        HubSettings(data_dir=tmp_path)


# ---- runs and their events ---------------------------------------------------------------------

DAY = 86400.0


def _run(ctx: HubContext, run_id: str, status: str, finished: float | None, events: int) -> None:
    def op(db: Any) -> None:
        db.table("runs").insert(
            {"id": run_id, "playbook": "site.yml", "actor": "t", "status": status,
             "created_at": 0, "finished_at": finished}
        )  # fmt: skip
        db.table("run_events").insert_all(
            {"run_id": run_id, "seq": seq, "ts": 0, "status": "ok"} for seq in range(1, events + 1)
        )

    ctx.store.write(op)


def _left(ctx: HubContext, table: str, column: str) -> dict[str, int]:
    rows = ctx.store.read().execute(f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}")
    return dict(rows.fetchall())


def test_finished_runs_leave_with_their_events_and_live_ones_stay(make_context):
    ctx = make_context(run_retention_s=30 * DAY)
    now = ctx.clock()
    _run(ctx, "old", "successful", now - 31 * DAY, 3)
    _run(ctx, "old-failed", "failed", now - 40 * DAY, 2)
    _run(ctx, "recent", "successful", now - 29 * DAY, 2)
    _run(ctx, "running", "running", None, 2)
    _run(ctx, "locked", "interrupted", now - 31 * DAY, 1)
    _run(ctx, "drift-proof", "successful", now - 31 * DAY, 1)
    ctx.store.write(
        lambda db: (
            db.table("host_locks").insert({"host": "h1", "run_id": "locked", "acquired_at": 0}),
            db.table("drift").insert(
                {"host": "h2", "run_id": "drift-proof", "detected_at": 0, "changed_tasks": "[]"}
            ),
        )
    )
    assert retention.expire_runs(ctx) == {"runs": 2, "run_events": 5}
    kept = {"recent", "running", "locked", "drift-proof"}
    assert set(_left(ctx, "runs", "id")) == kept
    assert set(_left(ctx, "run_events", "run_id")) == kept
    assert retention.expire_runs(ctx) == {}, "nothing left to do"


def test_run_retention_deletes_in_bounded_writes(make_context):
    ctx = make_context(run_retention_s=DAY, retention_batch_rows=3, retention_max_batches=1)
    _run(ctx, "big", "successful", ctx.clock() - 2 * DAY, 7)
    _run(ctx, "small", "successful", ctx.clock() - 2 * DAY + 1, 1)
    outcomes = [retention.expire_runs(ctx) for _ in range(4)]
    assert outcomes == [
        {"run_events": 3},  # one write of three rows per job run
        {"run_events": 3},
        {"run_events": 2, "runs": 1},  # the last of big's events, big, then small's event
        {"runs": 1},
    ]
    assert _left(ctx, "runs", "id") == {} and _left(ctx, "run_events", "run_id") == {}
