"""Deployments through the hub's services: apply places replicas and writes each agent's
desired state; apply is idempotent; quotas and the image store are enforced with reasons."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from aiorch.errors import Conflict, Forbidden, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import (
    agents,
    budgets,
    deployment_views,
    deployments,
    drift,
    enrollment,
    images,
    replicas,
)
from tests.fixtures_hub import fresh_csr

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 81559 * 2**20}
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: chat, project: nlp}}
spec:
  image: localhost/aiorch-model:v1
  ports: [{{containerPort: 8080, hostPort: 18080}}]
  resources: {{gpus: 1, gpuProduct: H100}}
  replicas: {replicas}
  healthCheck: {{httpGet: {{path: /healthz, port: 8080}}}}
"""


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
def ctx(make_context) -> HubContext:
    context = make_context()
    token = enrollment.create_token(context, "dc1", 3600, 10, "user:t")["token"]
    for name in ("gpu-a", "gpu-b"):
        facts = {"hostname": name, "gpus": [H100], "cpu": {"logical_count": 32}}
        enrollment.enroll(context, token, fresh_csr(), {**facts, "memory_total_bytes": 2**38}, "1")
    asyncio.run(
        images.store(context, "localhost/aiorch-model:v1", _chunks(b"archive"), "t", 1 << 20)
    )
    return context


def _desired(ctx: HubContext, host: str) -> dict:
    agent_id = (
        ctx.store.read().execute("SELECT agent_id FROM hosts WHERE name = ?", [host]).fetchone()[0]
    )
    return agents.get_desired(ctx, agent_id)


def test_apply_places_replicas_and_publishes_desired_state(ctx: HubContext):
    result = deployments.apply(ctx, SPEC.format(replicas=2), "user:t")
    assert result["changed"] and len(result["plan"]["placed"]) == 2
    for host in ("gpu-a", "gpu-b"):
        desired = _desired(ctx, host)
        (workload,) = desired["document"]["workloads"]
        assert desired["revision"] == 1
        assert (
            workload["image"]["digest"]
            == images.resolve(ctx.store.read(), "localhost/aiorch-model:v1")["digest"]
        )
        assert (
            workload["gpus"] == [0] and workload["health_check"]["port"] == 8080
        )  # the container port


def test_apply_twice_changes_nothing(ctx: HubContext):
    deployments.apply(ctx, SPEC.format(replicas=2), "user:t")
    again = deployments.apply(ctx, SPEC.format(replicas=2), "user:t")
    assert again["changed"] is False
    assert _desired(ctx, "gpu-a")["revision"] == 1


def test_plan_explains_unplaced_replicas_and_changes_nothing(ctx: HubContext):
    result = deployments.plan(ctx, SPEC.format(replicas=3))
    assert len(result["plan"]["placed"]) == 2
    (unplaced,) = result["plan"]["unplaced"]
    assert "H100" in unplaced["reason"]
    assert deployment_views.list_deployments(ctx) == []


def test_over_quota_is_refused_with_numbers_and_stores_nothing(ctx: HubContext):
    budgets.set_quota(ctx, "nlp", "user:admin", max_gpus=1)
    with pytest.raises(Forbidden, match="quota 1"):
        deployments.apply(ctx, SPEC.format(replicas=2), "user:t")
    assert deployment_views.list_deployments(ctx) == []
    assert _desired(ctx, "gpu-a")["revision"] == 0
    entries = list(
        ctx.store.read().query("SELECT detail FROM audit_log WHERE action = 'policy.quota'")
    )
    assert json.loads(entries[0]["detail"])["outcome"] == "deny", "the refusal is audited"


def test_image_outside_the_store_is_refused(ctx: HubContext):
    with pytest.raises(Forbidden, match="image"):
        deployments.apply(ctx, SPEC.format(replicas=1).replace("model:v1", "model:v9"), "u")


def test_bad_spec_names_the_field(ctx: HubContext):
    with pytest.raises(InvalidInput, match="replicas"):
        deployments.apply(ctx, SPEC.format(replicas=-1), "user:t")


def test_delete_empties_the_agents_desired_state(ctx: HubContext):
    deployments.apply(ctx, SPEC.format(replicas=2), "user:t")
    deployments.delete(ctx, "chat", "user:t")
    assert _desired(ctx, "gpu-a")["document"] == {"workloads": []}
    assert json.loads(json.dumps(deployment_views.list_deployments(ctx))) == []


def test_secret_env_is_sealed_at_rest_and_opened_only_for_the_agent(ctx: HubContext):
    from aiorch.hub.schemas import CheckinRequest

    secret = "hunter2-do-not-store"
    text = SPEC.format(replicas=1) + f"  secretEnv: {{API_KEY: {secret}}}\n"
    deployments.apply(ctx, text, "user:t")
    for path in ctx.settings.data_dir.iterdir():  # the database and its WAL
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path.name
    host = deployment_views.show(ctx, "chat")["replicas"][0]["host"]
    (stored,) = _desired(ctx, host)["document"]["workloads"]
    assert stored["secret_env"]["API_KEY"] == "<sealed>", "the sealed value is not shown"
    agent_id = _desired(ctx, host)["agent_id"]
    body = CheckinRequest(agent_version="1", uptime_s=1, facts_hash="f", applied_revision=0)
    answer = asyncio.run(agents.checkin(ctx, agent_id, body, None))
    assert answer.document is not None
    assert answer.document["workloads"][0]["secret_env"] == {"API_KEY": secret}
    shown = deployment_views.show(ctx, "chat")
    assert shown["spec"]["spec"]["secretEnv"] == {"API_KEY": "**********"}


def _drift_check_finished(ctx: HubContext, gpu_b: dict[str, int]) -> None:
    counts = {"changed": 0, "failed": 0, "unreachable": 0} | gpu_b
    run = {"id": "r1", "finished_at": 1.0, "hosts": ["gpu-b"], "recap": {"gpu-b": counts},
           "preflight": {}, "status": "failed", "message": None}  # fmt: skip

    def op(db):
        db.table("runs").insert(
            {"id": "r1", "kind": "drift", "playbook": "site.yml", "actor": "t", "created_at": 0}
        )
        drift.record_drift(db, run)

    ctx.store.write(op)


def test_drifted_hosts_get_no_new_replicas_and_the_plan_says_why(ctx: HubContext):
    _drift_check_finished(ctx, {"changed": 2})
    plan = deployments.plan(ctx, SPEC.format(replicas=2))["plan"]
    assert [r["host"] for r in plan["placed"]] == ["gpu-a"]
    assert plan["excluded"] == ["host gpu-b excluded: drifted"]
    assert len(plan["unplaced"]) == 1


def test_hosts_whose_drift_is_unknown_keep_getting_replicas(ctx: HubContext):
    _drift_check_finished(ctx, {"failed": 1})
    assert [(f["host"], f["state"]) for f in drift.findings(ctx)] == [("gpu-b", "unknown")]
    plan = deployments.plan(ctx, SPEC.format(replicas=2))["plan"]
    assert sorted(r["host"] for r in plan["placed"]) == ["gpu-a", "gpu-b"]
    assert plan["excluded"] == []


def test_hosts_whose_agent_found_no_container_runtime_are_not_ready(ctx: HubContext):
    ctx.store.write(
        lambda db: db.execute(
            "UPDATE hosts SET facts = json_set(facts, '$.container_runtime', json('null')) "
            "WHERE name = 'gpu-a'"
        )
    )
    plan = deployments.plan(ctx, SPEC.format(replicas=1))["plan"]
    assert [r["host"] for r in plan["placed"]] == ["gpu-b"]
    assert plan["excluded"] == ["host gpu-a excluded: not ready"]


def _used_gpus(ctx: HubContext) -> list[tuple[str, int]]:
    rows = ctx.store.read().execute("SELECT host, gpus FROM deployment_replicas").fetchall()
    return [(host, gpu) for host, gpus in rows for gpu in json.loads(gpus)]


def test_apply_parses_and_places_off_the_writer_thread(
    ctx: HubContext, monkeypatch: pytest.MonkeyPatch
):
    threads: list[str] = []
    real_place, real_load = deployments.plan_placement, deployments.load_spec

    def place(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_place(*args, **kwargs)

    def load(text):
        threads.append(threading.current_thread().name)
        return real_load(text)

    monkeypatch.setattr(deployments, "plan_placement", place)
    monkeypatch.setattr(deployments, "load_spec", load)
    assert deployments.apply(ctx, SPEC.format(replicas=2), "user:t")["changed"]
    assert threads and "aiorch-store-writer" not in threads


def test_concurrent_applies_never_hand_out_the_same_gpu(
    ctx: HubContext, monkeypatch: pytest.MonkeyPatch
):
    """Both plans are made from the same snapshot (each wants both GPUs); the second to
    reach the writer finds the fleet changed, plans again and gets what is left: nothing."""
    both_planned = threading.Barrier(2, timeout=10)
    first_plans: list[int] = []
    real_place = deployments.plan_placement

    def place(*args, **kwargs):
        placement = real_place(*args, **kwargs)
        first_plans.append(len(placement.placed))
        if len(first_plans) <= 2:
            both_planned.wait()
        return placement

    monkeypatch.setattr(deployments, "plan_placement", place)
    specs = [SPEC.format(replicas=2), SPEC.format(replicas=2).replace("name: chat", "name: rag")]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda text: deployments.apply(ctx, text, "user:t"), specs))
    assert first_plans[:2] == [2, 2] and len(first_plans) == 3, "one apply planned again"
    used = _used_gpus(ctx)
    assert len(used) == len(set(used)) == 2, used
    assert sorted(len(r["plan"]["placed"]) for r in results) == [0, 2]


def test_apply_gives_up_with_409_when_the_fleet_keeps_changing(
    ctx: HubContext, monkeypatch: pytest.MonkeyPatch
):
    real_place = deployments.plan_placement
    changes = iter(range(100))

    def place(*args, **kwargs):
        n = next(changes)  # a host's facts change after every plan, before it is applied
        ctx.store.submit(
            lambda db: db.execute(
                "UPDATE hosts SET facts = json_set(facts, '$.n', ?) WHERE name = 'gpu-a'", [n]
            )
        )
        return real_place(*args, **kwargs)

    monkeypatch.setattr(deployments, "plan_placement", place)
    with pytest.raises(Conflict, match=f"each of {deployments.APPLY_ATTEMPTS} plans of chat"):
        deployments.apply(ctx, SPEC.format(replicas=2), "user:t")
    assert deployment_views.list_deployments(ctx) == [] and _used_gpus(ctx) == []


def test_publish_reads_inside_the_writers_transaction(ctx: HubContext):
    deployments.apply(ctx, SPEC.format(replicas=1), "user:t")
    host = deployment_views.show(ctx, "chat")["replicas"][0]["host"]
    new_digest = "sha256:" + "f" * 64

    def repush_and_publish(db):
        db.execute("UPDATE images SET digest = ? WHERE ref = 'localhost/aiorch-model:v1'",
                   [new_digest])  # fmt: skip
        replicas.publish(ctx, db, {host}, "user:t")

    ctx.store.write(repush_and_publish)
    (workload,) = _desired(ctx, host)["document"]["workloads"]
    assert workload["image"]["digest"] == new_digest
