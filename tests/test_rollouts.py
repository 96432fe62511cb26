"""Rollouts through the hub's services: a new template goes out wave by wave as agents report
the new replicas healthy, a failing wave rolls back on its own, and pause, resume and undo."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from aiorch.errors import Conflict
from aiorch.hub.context import HubContext
from aiorch.hub.services import (
    agents,
    audit,
    deployment_views,
    deployments,
    enrollment,
    images,
    metrics,
    rollouts,
    status,
)
from tests.fixtures_hub import fresh_csr

SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: web, project: lab}}
spec:
  image: localhost/aiorch-model:{version}
  env: {{NOTE: "{note}"}}
  ports: [{{containerPort: 8080, hostPort: 18080}}]
  replicas: 3
  healthCheck: {{httpGet: {{path: /healthz, port: 8080}}}}
  rollout: {rollout}
"""
HOSTS = ("edge1-1", "edge2-1", "edge3-1")


def spec(version: str = "v1", note: str = "a", rollout: str = "{}") -> str:
    return SPEC.format(version=version, note=note, rollout=rollout)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
def ctx(make_context) -> HubContext:
    context = make_context()
    for host in HOSTS:
        site = host.split("-")[0]
        token = enrollment.create_token(context, site, 3600, 1, "user:t")["token"]
        facts = {"hostname": host, "cpu": {"logical_count": 4}, "memory_total_bytes": 2**33}
        enrollment.enroll(context, token, fresh_csr(), facts, "1")
    for version in ("v1", "v2"):
        ref = f"localhost/aiorch-model:{version}"
        asyncio.run(images.store(context, ref, _chunks(version.encode()), "t", 1 << 20))
    return context


def _agent(ctx: HubContext, host: str) -> str:
    db = ctx.store.read()
    return str(db.execute("SELECT agent_id FROM hosts WHERE name = ?", [host]).fetchone()[0])


def _workloads(ctx: HubContext, host: str) -> list[dict]:
    return list(agents.get_desired(ctx, _agent(ctx, host))["document"]["workloads"])


def agents_report(ctx: HubContext, state: str = "healthy", hosts: tuple[str, ...] = HOSTS) -> None:
    """Each agent on `hosts` runs what it was told and reports every replica in `state`."""
    for host in hosts:
        report = {
            "workloads": {
                w["id"]: {"state": state, "template_hash": w["template_hash"], "reason": None}
                for w in _workloads(ctx, host)
            }
        }
        ctx.store.write(
            lambda db, r=report, h=host: db.execute(
                "UPDATE agents SET report = ? WHERE id = ?", [json.dumps(r), _agent(ctx, h)]
            )
        )


def revisions(ctx: HubContext) -> list[int]:
    return [r["revision"] for r in rollouts.status(ctx, "web")["replicas"]]


def notes(ctx: HubContext) -> list[str]:
    return [w["env"]["NOTE"] for host in HOSTS for w in _workloads(ctx, host)]


def test_first_apply_runs_everywhere_without_a_rollout(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    status = rollouts.status(ctx, "web")
    assert status["rollout"] is None and revisions(ctx) == [1, 1, 1]
    assert (status["revision"], status["stable_revision"]) == (1, 1)


def test_new_template_rolls_out_one_wave_at_a_time(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    result = deployments.apply(ctx, spec(note="b"), "user:t")
    assert result["revision"] == 2 and revisions(ctx) == [2, 1, 1]
    assert sorted(notes(ctx)) == ["a", "a", "b"]
    rollouts.progress(ctx)  # wave 1's agent has not run revision 2 yet
    assert revisions(ctx) == [2, 1, 1]
    for expected in ([2, 2, 1], [2, 2, 2]):
        agents_report(ctx)
        rollouts.progress(ctx)
        assert revisions(ctx) == expected
    agents_report(ctx)
    rollouts.progress(ctx)
    status = rollouts.status(ctx, "web")
    assert status["rollout"]["state"] == "succeeded" and status["stable_revision"] == 2
    assert all(r["updated"] and r["state"] == "healthy" for r in status["replicas"])


def test_unhealthy_wave_rolls_back_to_the_previous_revision(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(version="v2"), "user:t")
    agents_report(ctx, state="unhealthy")
    assert (
        rollouts.progress(ctx) == "web: rolled back to revision 1 (wave 1/3: replica 0 on "
        "edge1-1 is unhealthy)"
    )
    status = rollouts.status(ctx, "web")
    assert status["rollout"]["state"] == "rolled_back" and status["revision"] == 1
    assert revisions(ctx) == [1, 1, 1]
    refs = {w["image"]["ref"] for host in HOSTS for w in _workloads(ctx, host)}
    assert refs == {"localhost/aiorch-model:v1"}
    shown = deployment_views.show(ctx, "web")
    assert shown["spec"]["spec"]["image"] == "localhost/aiorch-model:v1"
    actions = [e["action"] for e in audit.list_entries(ctx, limit=50)]
    assert "rollout.rolled_back" in actions and "rollout.start" in actions
    # Applying the broken spec again is a new attempt, not a no-op.
    assert deployments.apply(ctx, spec(version="v2"), "user:t")["changed"]


def test_without_auto_rollback_a_failed_rollout_stays_for_undo(ctx: HubContext):
    manual = "{autoRollback: false}"
    deployments.apply(ctx, spec(rollout=manual), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(version="v2", rollout=manual), "user:t")
    agents_report(ctx, state="failed")
    rollouts.progress(ctx)
    assert rollouts.status(ctx, "web")["rollout"]["state"] == "failed"
    assert revisions(ctx) == [2, 1, 1]
    undone = deployments.undo(ctx, "web", "user:t")
    assert undone["rollout"]["state"] == "rolled_back" and revisions(ctx) == [1, 1, 1]


def test_offline_host_shows_pending_and_does_not_block(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    ctx.clock.now += 3600  # type: ignore[attr-defined]
    online = HOSTS[1:]  # the first host went quiet long before the rollout
    ctx.store.write(
        lambda db: db.execute(
            "UPDATE agents SET last_seen = ? WHERE host_name IN (?, ?)", [ctx.clock(), *online]
        )
    )
    deployments.apply(ctx, spec(note="b", rollout="{waveSize: 2}"), "user:t")
    for _ in range(2):
        agents_report(ctx, hosts=online)
        rollouts.progress(ctx)
    status = rollouts.status(ctx, "web")
    assert status["rollout"]["state"] == "succeeded"
    (offline,) = [r for r in status["replicas"] if r["host"] == HOSTS[0]]
    assert (offline["online"], offline["updated"], offline["revision"]) == (False, False, 2)


def test_a_host_going_quiet_during_its_wave_fails_it_and_rolls_back(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(note="b", rollout="{waveSize: 2}"), "user:t")
    ctx.clock.now += 601  # type: ignore[attr-defined]  # past the progress deadline, silent
    rollouts.progress(ctx)
    status = rollouts.status(ctx, "web")
    assert status["rollout"]["state"] == "rolled_back", status["rollout"]
    assert "not healthy after 600s" in status["rollout"]["reason"]
    assert "pending (host offline)" in status["rollout"]["reason"]


def test_pause_holds_the_next_wave_and_resume_goes_on(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(note="b"), "user:t")
    assert rollouts.pause(ctx, "web", "user:t")["rollout"]["state"] == "paused"
    agents_report(ctx)
    rollouts.progress(ctx)
    assert revisions(ctx) == [2, 1, 1]
    with pytest.raises(Conflict, match="is paused, not progressing"):
        rollouts.pause(ctx, "web", "user:t")
    rollouts.resume(ctx, "web", "user:t")
    rollouts.progress(ctx)
    assert revisions(ctx) == [2, 2, 1]


def test_undo_after_a_finished_rollout_rolls_the_old_template_out_again(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(note="b", rollout="{waveSize: 3}"), "user:t")
    agents_report(ctx)
    rollouts.progress(ctx)
    assert rollouts.status(ctx, "web")["rollout"]["state"] == "succeeded"
    status = deployments.undo(ctx, "web", "user:t")
    assert status["revision"] == 1 and status["rollout"]["to_revision"] == 1
    assert revisions(ctx) == [1, 1, 1] and notes(ctx) == ["a", "a", "a"]


def test_undo_with_nothing_to_go_back_to_is_refused(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    with pytest.raises(Conflict, match="no earlier revision"):
        deployments.undo(ctx, "web", "user:t")


def test_three_changes_in_a_row_leave_one_rollout_to_the_newest(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    for note in ("b", "c", "d"):
        deployments.apply(ctx, spec(note=note), "user:t")
    states = [r["state"] for r in ctx.store.read().query("SELECT state FROM rollouts ORDER BY id")]
    assert states == ["superseded", "superseded", "progressing"]
    assert sorted(notes(ctx)) == ["a", "a", "d"]


def test_scaling_alone_starts_no_rollout(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    deployments.apply(ctx, spec().replace("replicas: 3", "replicas: 2"), "user:t")
    assert rollouts.status(ctx, "web")["rollout"] is None and revisions(ctx) == [1, 1]


def test_metrics_count_replicas_by_state_and_rollouts_under_way(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(note="b"), "user:t")
    text = metrics.render(ctx).decode()
    assert 'aiorch_deployment_replicas{deployment="web",project="lab",state="healthy"} 3.0' in text
    assert 'aiorch_rollouts_active{state="progressing"} 1.0' in text
    latest = 'aiorch_deployment_rollout_state{deployment="web",project="lab",state="progressing"}'
    assert f"{latest} 1.0" in text
    hidden = metrics.render(ctx, frozenset({"other"})).decode()
    assert "aiorch_deployment_rollout_state{" not in hidden, "only the scraper's projects"


def test_status_overview_shows_replica_states_and_the_rollout_under_way(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(note="b"), "user:t")
    (row,) = status.overview(ctx)["deployments"]
    assert row == {
        "deployment": "web",
        "project": "lab",
        "replicas": 3,
        "healthy": 3,
        "pending": 0,
        "starting": 0,
        "not_healthy": 0,
        "rollout": "progressing to revision 2",
    }


def test_applying_while_every_host_is_offline_keeps_their_replicas(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    ctx.clock.now += 3600  # type: ignore[attr-defined]  # e.g. a hub restarted before check-ins
    result = deployments.apply(ctx, spec(note="b", rollout="{waveSize: 3}"), "user:t")
    assert len(result["plan"]["kept"]) == 3 and not result["plan"]["removed"]
    assert sorted(notes(ctx)) == ["b", "b", "b"]  # the change waits for them, nothing is lost
    rollouts.progress(ctx)
    assert rollouts.status(ctx, "web")["rollout"]["state"] == "succeeded"


def test_one_broken_rollout_does_not_hold_back_the_others(
    ctx: HubContext, caplog: pytest.LogCaptureFixture
):
    other = spec().replace("name: web", "name: api").replace("18080", "18081")
    for text in (spec(), other):
        deployments.apply(ctx, text, "user:t")
    agents_report(ctx)
    for text in (spec(note="b"), other.replace('NOTE: "a"', 'NOTE: "b"')):
        deployments.apply(ctx, text, "user:t")
    # web's stored spec no longer validates (say, a later release tightened the schema).
    ctx.store.write(
        lambda db: db.execute("UPDATE deployments SET spec = '{\"kind\": 1}' WHERE name = 'web'")
    )
    agents_report(ctx)
    with caplog.at_level("ERROR", logger="aiorch.hub.rollouts"):
        assert rollouts.progress(ctx) == "api: wave 2/3 started"
        agents_report(ctx)
        assert rollouts.progress(ctx) == "api: wave 3/3 started"
    assert [r["revision"] for r in rollouts.status(ctx, "api")["replicas"]] == [2, 2, 2]
    broken = rollouts.status(ctx, "web")["rollout"]
    assert broken["state"] == "progressing" and broken["wave"] == 1
    assert broken["reason"].startswith(rollouts.CANNOT_STEP + "SpecError")
    logged = [r for r in caplog.records if r.name == "aiorch.hub.rollouts"]
    assert len(logged) == 1 and "rollout 1 of web cannot step" in logged[0].getMessage()


def test_a_rollout_that_steps_again_loses_its_error(ctx: HubContext):
    deployments.apply(ctx, spec(), "user:t")
    agents_report(ctx)
    deployments.apply(ctx, spec(note="b"), "user:t")
    good = ctx.store.read().execute("SELECT spec FROM deployments WHERE name = 'web'").fetchone()
    ctx.store.write(lambda db: db.execute("UPDATE deployments SET spec = '{}' WHERE name = 'web'"))
    rollouts.progress(ctx)
    assert rollouts.status(ctx, "web")["rollout"]["reason"].startswith(rollouts.CANNOT_STEP)
    restore = "UPDATE deployments SET spec = ? WHERE name = 'web'"
    ctx.store.write(lambda db: db.execute(restore, good))
    agents_report(ctx)
    assert rollouts.progress(ctx) == "web: wave 2/3 started"
    assert rollouts.status(ctx, "web")["rollout"]["reason"] is None
