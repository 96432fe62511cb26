"""Background jobs with a controlled clock: agents go offline, tokens expire, both registered."""

from __future__ import annotations

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from aiorch.hub.context import HubContext
from aiorch.hub.jobs import register_jobs
from aiorch.hub.services import agents, enrollment
from tests.fixtures_hub import fresh_csr


@pytest.fixture
def ctx(make_context) -> HubContext:
    return make_context(poll_interval_s=10, offline_after_missed=3)


def test_agent_goes_offline_after_missed_checkins(ctx: HubContext):
    token = enrollment.create_token(ctx, "edge1", 3600, 1, "user:test")["token"]
    agent_id = enrollment.enroll(ctx, token, fresh_csr(), {"hostname": "h1"}, "1")["agent_id"]
    assert agents.mark_offline(ctx) == []
    ctx.clock.now += 31  # type: ignore[attr-defined]
    assert agents.list_agents(ctx)[0]["status"] == "offline"
    assert agents.mark_offline(ctx) == [agent_id]
    assert agents.mark_offline(ctx) == [], "a transition is recorded once"
    assert [e["action"] for e in ctx.store.read().query("SELECT action FROM audit_log")][-1] == (
        "agent.offline"
    )


def test_enrollment_tokens_expire(ctx: HubContext):
    enrollment.create_token(ctx, "edge1", 60, 1, "user:test")
    assert enrollment.expire_tokens(ctx) == 0
    ctx.clock.now += 61  # type: ignore[attr-defined]
    assert enrollment.expire_tokens(ctx) == 1
    assert enrollment.list_tokens(ctx)[0]["status"] == "expired"


def test_all_jobs_are_registered_in_one_place(ctx: HubContext):
    scheduler = BackgroundScheduler()
    register_jobs(scheduler, ctx)
    assert {j.id for j in scheduler.get_jobs()} == {
        "drift-check",
        "flush-heartbeats",
        "jobs-clusters",
        "mark-agents-offline",
        "expire-enrollment-tokens",
        "telemetry-downsample",
        "telemetry-retention",
        "runs-retention",
        "jobs-schedule",
        "agents-retention",
        "revisions-retention",
        "images-gc",
        "models-gc",
        "rollouts-progress",
        "deployments-autoscale",
        "audit-checkpoint",
        "tls-renew",
        "machines-deadlines",
        "machines-release-retired",
    }


def test_heartbeats_show_at_once_and_persist_on_flush(ctx: HubContext):
    import asyncio

    from aiorch.hub.schemas import CheckinRequest

    token = enrollment.create_token(ctx, "edge1", 3600, 1, "user:test")["token"]
    agent_id = enrollment.enroll(ctx, token, fresh_csr(), {"hostname": "h2"}, "1")["agent_id"]
    ctx.clock.now += 100  # type: ignore[attr-defined]
    body = CheckinRequest(agent_version="2", uptime_s=5, facts_hash="f", applied_revision=7)
    asyncio.run(agents.checkin(ctx, agent_id, body, None))
    row = agents.get_agent(ctx, agent_id)
    assert (row["applied_revision"], row["status"]) == (7, "online"), "pending beat is overlaid"
    stored = "SELECT applied_revision, last_seen FROM agents WHERE id = ?"
    assert ctx.store.read().execute(stored, [agent_id]).fetchone()[0] == 0
    assert ctx.heartbeats.flush(ctx.store) == 1
    assert ctx.store.read().execute(stored, [agent_id]).fetchone() == (7, ctx.clock.now)  # type: ignore[attr-defined]
