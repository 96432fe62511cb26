"""Rollout waves and their gate, as pure functions: canary first, offline hosts never block,
a failing wave or a missed deadline fails the rollout with a reason."""

from __future__ import annotations

from typing import Any

from aiorch.deploy.hosts import HostView, Replica
from aiorch.deploy.rollout import Observed, Progress, advance, plan_waves
from aiorch.deploy.spec import Rollout

HOSTS = {
    name: HostView(name, site=name.split("-")[0]) for name in ("edge1-1", "edge2-1", "edge3-1")
}
REPLICAS = [Replica(i, host) for i, host in enumerate(["edge2-1", "edge1-1", "edge3-1", "edge2-1"])]


def rollout(**fields: Any) -> Rollout:
    return Rollout.model_validate(fields)


def progress(wave: int = 0, started: float = 0.0, **fields: Any) -> Progress:
    values: dict[str, Any] = {
        "waves": [[0], [1, 2]],
        "wave": wave,
        "target_template": "new",
        "wave_started_at": started,
        "healthy_since": None,
        "pause_s": 0.0,
        "deadline_s": 600.0,
        **fields,
    }
    return Progress(**values)


def seen(
    ordinal: int,
    state: str = "healthy",
    template: str = "new",
    online: bool = True,
    last_seen: float | None = None,
) -> Observed:
    return Observed(ordinal, f"h{ordinal}", online, state, template, None, last_seen)


def test_rolling_waves_follow_wave_size_in_ordinal_order():
    assert plan_waves(rollout(), REPLICAS, HOSTS) == [[0], [1], [2], [3]]
    assert plan_waves(rollout(waveSize=3), REPLICAS, HOSTS) == [[0, 1, 2], [3]]
    assert plan_waves(rollout(maxUnavailable=2), REPLICAS, HOSTS) == [[0, 1], [2, 3]]
    assert plan_waves(rollout(maxUnavailable=0), REPLICAS, HOSTS) == [[0], [1], [2], [3]]


def test_canary_hosts_go_first_then_the_rest():
    canary = rollout(strategy="canary", canarySelector={"site": "edge2"}, waveSize=2)
    assert plan_waves(canary, REPLICAS, HOSTS) == [[0, 3], [1, 2]]
    nowhere = rollout(strategy="canary", canarySelector={"site": "edge9"}, waveSize=2)
    assert plan_waves(nowhere, REPLICAS, HOSTS) == [[0, 1], [2, 3]]


def test_wave_waits_until_its_replicas_run_the_new_template_healthy():
    assert advance(progress(), {0: seen(0, template="old")}, 5).action == "wait"
    assert advance(progress(), {0: seen(0, state="starting")}, 5).action == "wait"
    assert advance(progress(), {0: seen(0)}, 5).action == "next"


def test_last_healthy_wave_finishes_the_rollout():
    observed = {1: seen(1), 2: seen(2)}
    assert advance(progress(wave=1), observed, 5).action == "done"


def test_unhealthy_replica_on_the_new_template_fails_with_its_reason():
    bad = Observed(0, "edge1-1", True, "unhealthy", "new", "GET /healthz answered 500")
    step = advance(progress(), {0: bad}, 5)
    assert step.action == "fail"
    assert step.reason == "wave 1/2: replica 0 on edge1-1 is unhealthy: GET /healthz answered 500"
    # The same state about the old container is no verdict on the new revision.
    assert advance(progress(), {0: seen(0, state="failed", template="old")}, 5).action == "wait"


def test_offline_hosts_do_not_hold_a_wave_back():
    observed = {1: seen(1), 2: seen(2, state="starting", template="old", online=False)}
    assert advance(progress(wave=1), observed, 5).action == "done"


def test_a_host_that_goes_quiet_during_its_wave_holds_it_until_the_deadline():
    """Seen 10 s before the wave began (online then, with offline after 15 s), silent since:
    busy loading the new image, say. The wave must not pass on a replica nobody saw healthy
    on the new revision (a broken version once rolled out 'successfully' like this)."""
    quiet = {0: seen(0, state="healthy", template="old", online=False, last_seen=90)}
    waiting = progress(started=100, offline_after_s=15)
    assert advance(waiting, quiet, 130).action == "wait"
    step = advance(waiting, quiet, 701)
    assert step.action == "fail" and "replica 0 on h0 is pending (host offline)" in step.reason
    # Offline well before the wave began: it does not hold the wave back.
    gone = {0: seen(0, state="healthy", template="old", online=False, last_seen=80)}
    assert advance(waiting, gone, 130).action == "next"


def test_wave_not_healthy_by_the_deadline_fails():
    step = advance(progress(deadline_s=60), {0: seen(0, state="starting")}, 61)
    assert step.action == "fail"
    assert "wave 1/2 not healthy after 60s: replica 0 on h0 is starting" in step.reason


def test_pause_between_waves_counts_from_when_the_wave_turned_healthy():
    step = advance(progress(pause_s=30), {0: seen(0)}, 100)
    assert (step.action, step.healthy_since) == ("wait", 100)
    later = progress(pause_s=30, healthy_since=100)
    assert advance(later, {0: seen(0)}, 129).action == "wait"
    assert advance(later, {0: seen(0)}, 130).action == "next"


def test_removed_replicas_are_skipped():
    assert advance(progress(wave=1), {1: seen(1)}, 5).action == "done"
