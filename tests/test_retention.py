"""Bounded growth: each retention job removes what has aged out and keeps what is live."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiorch.errors import UserError
from aiorch.hub.context import HubContext
from aiorch.hub.schemas import CheckinRequest, TelemetryBatch
from aiorch.hub.services import (
    agents,
    deployments,
    enrollment,
    images,
    metrics,
    retention,
    retire,
    rollouts,
    runs,
    telemetry,
)
from aiorch.hub.settings import HubSettings
from tests.fixtures_desired import a_workload
from tests.fixtures_hub import AIORCH, fresh_csr
from tests.test_rollouts import HOSTS, agents_report, revisions, spec


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
    with pytest.raises(UserError, match=r"^bad hub setting: AIORCH_RAW_RETENTION_S: .*-1"):
        HubSettings(data_dir=tmp_path)


def test_hub_serve_with_a_bad_setting_says_which_in_one_line(tmp_path: Path):
    env = {**os.environ, "AIORCH_RUN_FORKS": "many"}
    result = subprocess.run(
        [AIORCH, "hub", "serve", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "aiorch: error: bad hub setting: AIORCH_RUN_FORKS: Input should be a valid integer, "
        "unable to parse string as an integer (got 'many')"
    ]


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


# ---- series, streams and latest values of agents gone ------------------------------------------


def _enroll(ctx: HubContext, host: str) -> str:
    token = enrollment.create_token(ctx, "edge1", 3600, 1, "user:t")["token"]
    return str(enrollment.enroll(ctx, token, fresh_csr(), {"hostname": host}, "1")["agent_id"])


def _report(ctx: HubContext, agent_id: str, seq: int) -> None:
    """One sample of a simulated GPU's utilisation, taken now."""
    batch = TelemetryBatch(
        epoch="e1",
        seq_start=seq,
        seq_end=seq,
        series=[{"metric": "gpu_utilization_percent", "labels": {"gpu": "0", "simulated": "1"}}],
        samples=[(seq, ctx.clock(), 0, 50.0)],
    )
    asyncio.run(telemetry.ingest(ctx, agent_id, batch))
    telemetry.downsample(ctx)


def _checkin(ctx: HubContext, agent_id: str) -> None:
    body = CheckinRequest(agent_version="1", uptime_s=1, facts_hash="f", applied_revision=0)
    asyncio.run(agents.checkin(ctx, agent_id, body, None))


def _owners(ctx: HubContext, table: str) -> set[str]:
    return set(_left(ctx, table, "agent_id"))


def test_series_and_streams_of_retired_and_silent_agents_leave_once_their_data_has(make_context):
    ctx = make_context(agent_retention_s=30 * DAY, rollup_retention_s=14 * DAY)
    retired, live, silent = (_enroll(ctx, h) for h in ("retired-1", "live-1", "silent-1"))
    for agent_id in (retired, live, silent):
        _report(ctx, agent_id, 1)
    ctx.store.write(
        lambda db: db.execute("UPDATE agents SET revoked_at = 1 WHERE id = ?", [retired])
    )
    assert retention.forget_gone_agents(ctx) == {"latest_values": 1}, "history stays while it lasts"
    assert _owners(ctx, "series") == _owners(ctx, "streams") == {retired, live, silent}

    ctx.clock.now += 15 * DAY  # type: ignore[attr-defined]
    telemetry.apply_retention(ctx)  # the samples and rollups of 15 days ago age out
    _checkin(ctx, live)
    _report(ctx, live, 2)
    assert retention.forget_gone_agents(ctx) == {"series": 1, "streams": 1, "latest_values": 1}
    assert _owners(ctx, "series") == _owners(ctx, "streams") == {live, silent}

    ctx.clock.now += 16 * DAY  # type: ignore[attr-defined]
    _checkin(ctx, live)
    assert retention.forget_gone_agents(ctx) == {"series": 1, "streams": 1, "latest_values": 1}
    assert _owners(ctx, "series") == _owners(ctx, "streams") == {live}

    _report(ctx, silent, 3)  # back after a month: its series are made again, not reused
    orphans = "SELECT COUNT(*) FROM samples s LEFT JOIN series x ON x.id = s.series_id "
    assert ctx.store.read().execute(orphans + "WHERE x.id IS NULL").fetchone()[0] == 0
    assert _owners(ctx, "series") == {live, silent}


def test_latest_values_forget_a_retired_host_at_once(make_context, monkeypatch):
    ctx = make_context(playbooks_dir=Path(__file__).parent / "playbooks")
    launched: list[tuple[Any, ...]] = []  # runs are created, not executed: no host to run on
    monkeypatch.setattr(runs, "_launch", lambda *args: launched.append(args))
    kept, going = _enroll(ctx, "kept-1"), _enroll(ctx, "going-1")
    for agent_id in (kept, going):
        _report(ctx, agent_id, 1)
    run = retire.retire_host(ctx, "going-1", "user:t")
    runs._finish(ctx, run["id"], runs._Outcome(status="successful"), launched[-1][-1])
    assert {key[0] for key in ctx.latest.snapshot()} == {kept}
    assert b'host="going-1"' not in metrics.render(ctx)


# ---- deployment revisions ----------------------------------------------------------------------


@pytest.fixture
def fleet(make_context) -> HubContext:
    """Three enrolled edge boxes and two pushed images, as the rollout tests have them."""
    ctx = make_context(revisions_kept=1, image_gc_grace_s=7 * DAY)
    for host in HOSTS:
        token = enrollment.create_token(ctx, host.split("-")[0], 3600, 1, "user:t")["token"]
        facts = {"hostname": host, "cpu": {"logical": 4}, "memory_total_bytes": 2**33}
        enrollment.enroll(ctx, token, fresh_csr(), facts, "1")
    for version in ("v1", "v2"):
        _push(ctx, f"localhost/aiorch-model:{version}", version.encode())
    return ctx


def _push(ctx: HubContext, ref: str, data: bytes) -> str:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return str(asyncio.run(images.store(ctx, ref, chunks(), "user:t", 1 << 20))["digest"])


def _revisions(ctx: HubContext) -> list[int]:
    rows = ctx.store.read().execute("SELECT revision FROM deployment_revisions ORDER BY revision")
    return [r[0] for r in rows]


def test_revisions_keep_the_current_the_stable_those_running_and_the_newest(fleet: HubContext):
    deployments.apply(fleet, spec(note="1"), "user:t")  # revision 1, everywhere: stable
    agents_report(fleet)
    deployments.apply(fleet, spec(note="2"), "user:t")
    agents_report(fleet)
    rollouts.progress(fleet)  # revision 2 on replicas 0 and 1, then superseded
    for note in ("3", "4", "5"):
        deployments.apply(fleet, spec(note=note), "user:t")  # each moves replica 0 only
    assert revisions(fleet) == [5, 2, 1] and _revisions(fleet) == [1, 2, 3, 4, 5]
    assert retention.prune_revisions(fleet) == {"deployment_revisions": 2}
    assert _revisions(fleet) == [1, 2, 5], "stable, run by replica 1, current (and newest)"
    for _ in range(3):
        agents_report(fleet)
        rollouts.progress(fleet)
    status = rollouts.status(fleet, "web")
    assert status["rollout"]["state"] == "succeeded" and revisions(fleet) == [5, 5, 5]
    retention.prune_revisions(fleet)
    assert _revisions(fleet) == [1, 5], "1 stays as the latest rollout's start, for undo"
    assert deployments.undo(fleet, "web", "user:t")["rollout"]["to_revision"] == 1


# ---- image garbage collection ------------------------------------------------------------------


def _image_state(ctx: HubContext) -> tuple[set[str], set[str]]:
    """The stored refs, and the blob files present (as digests)."""
    refs = {r[0] for r in ctx.store.read().execute("SELECT ref FROM images")}
    folder = ctx.settings.data_dir / "images" / "sha256"
    return refs, {f"sha256:{p.name}" for p in folder.iterdir()}


def _upload_left(ctx: HubContext, name: str, written_at: float) -> Path:
    """A part-written upload, as a push in progress (or one a dead hub left) has it."""
    path = ctx.settings.data_dir / "images" / "tmp" / name
    path.write_bytes(b"partial")
    os.utime(path, (written_at, written_at))
    return path


def test_image_gc_removes_images_nothing_names_after_the_grace(fleet: HubContext):
    pushed_at = fleet.clock()
    deployments.apply(fleet, spec(version="v1"), "user:t")  # its revision names v1
    spare = _enroll(fleet, "spare-1")
    v2 = _digest(fleet, "localhost/aiorch-model:v2")
    image = {"ref": "localhost/aiorch-model:v2", "digest": v2, "size": 1}
    agents.set_desired(fleet, spare, {"workloads": [a_workload(image=image)]}, "user:t")
    replaced = _push(fleet, "localhost/aiorch-model:v3", b"v3, first push")
    v3 = _push(fleet, "localhost/aiorch-model:v3", b"v3")  # the first blob is left unnamed
    dead_upload = _upload_left(fleet, "upload-1-1", pushed_at)
    assert images.collect_garbage(fleet) == {}, "within the grace everything stays"

    fleet.clock.now += 8 * DAY  # type: ignore[attr-defined]
    v4 = _push(fleet, "localhost/aiorch-model:v4", b"v4")  # just pushed, not deployed yet
    uploading = _upload_left(fleet, "upload-1-2", fleet.clock())
    assert images.collect_garbage(fleet) == {"image_rows": 1, "image_files": 3}
    refs, blobs = _image_state(fleet)
    assert refs == {f"localhost/aiorch-model:{v}" for v in ("v1", "v2", "v4")}
    assert v2 in blobs and v4 in blobs and not {replaced, v3} & blobs
    assert uploading.exists() and not dead_upload.exists()
    v1 = _digest(fleet, "localhost/aiorch-model:v1")
    assert images.agent_blob(fleet, _agent_of(fleet, HOSTS[0]), v1).exists()
    audit = [e for e in fleet.store.read().query("SELECT * FROM audit_log")]
    assert audit[-1]["action"] == "image.gc" and "aiorch-model:v3" in audit[-1]["detail"]


def test_image_gc_keeps_an_image_named_while_it_looked(
    fleet: HubContext, monkeypatch: pytest.MonkeyPatch
):
    fleet.clock.now += 8 * DAY  # type: ignore[attr-defined]
    scan = images._names_in_use

    def scan_then_apply(db: Any) -> tuple[set[str], set[str]]:
        found = scan(db)
        deployments.apply(fleet, spec(version="v2"), "user:t")  # lands before the GC's write
        return found

    monkeypatch.setattr(images, "_names_in_use", scan_then_apply)
    assert images.collect_garbage(fleet) == {}
    assert {"localhost/aiorch-model:v1", "localhost/aiorch-model:v2"} <= _image_state(fleet)[0]


def _digest(ctx: HubContext, ref: str) -> str:
    row = ctx.store.read().execute("SELECT digest FROM images WHERE ref = ?", [ref]).fetchone()
    return str(row[0])


def _agent_of(ctx: HubContext, host: str) -> str:
    row = ctx.store.read().execute("SELECT agent_id FROM hosts WHERE name = ?", [host]).fetchone()
    return str(row[0])


def test_hub_serve_takes_the_poll_interval_from_the_environment(tmp_path: Path, monkeypatch):
    """Options left out leave the AIORCH_* setting in force instead of their own default."""
    from typer.testing import CliRunner

    import aiorch.hub.server
    from aiorch.cli.main import app

    seen: list[HubSettings] = []
    monkeypatch.setattr(aiorch.hub.server, "serve", lambda settings, *a, **k: seen.append(settings))
    monkeypatch.setenv("AIORCH_POLL_INTERVAL_S", "7")
    runner = CliRunner()
    assert runner.invoke(app, ["hub", "serve", "--data-dir", str(tmp_path)]).exit_code == 0
    given = ["hub", "serve", "--data-dir", str(tmp_path), "--poll-interval", "3"]
    assert runner.invoke(app, given).exit_code == 0
    assert [s.poll_interval_s for s in seen] == [7.0, 3.0]
