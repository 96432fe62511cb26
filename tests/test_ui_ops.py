"""The dashboard's deployments, runs, GPU-hours and audit pages over the real app and a real
SQLite store (in process, no uvicorn): 404s, pages of lists, the audit search, the live log
of a finished run, rollout buttons by role and CSRF, and no secret on a run's page."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, deployments, enrollment, images, redaction
from aiorch.hub.services.run_events import event_row
from aiorch.hub.ui.paging import PER_PAGE
from aiorch.hub.ui.runs import log_stream
from tests.fixtures_hub import fresh_csr
from tests.fixtures_ui import CSRF

SECRET = "hunter2-very-secret"
T = TypeVar("T")
SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: web, project: default}}
spec:
  image: localhost/aiorch-model:v1
  env: {{NOTE: "{note}"}}
  replicas: 2
  rollout: {{waveSize: 1, progressDeadlineSeconds: 3600}}
"""


@pytest.fixture
def ctx(make_context: Callable[..., HubContext]) -> HubContext:
    return make_context()


def csrf_of(client: TestClient, path: str) -> str:
    return CSRF.search(client.get(path).text).group(1)  # type: ignore[union-attr]


def add_run(ctx: HubContext, run_id: str, created_at: float, **extra: Any) -> None:
    row = {"id": run_id, "playbook": "site.yml", "actor": "user:t", "created_at": created_at}
    row |= {"status": "successful", "hosts": '["edge1-1"]', "recap": "{}", "preflight": "{}"}
    ctx.store.write(lambda db: db.table("runs").insert(row | extra))


def store_events(ctx: HubContext, run_id: str, events: list[dict[str, Any]]) -> None:
    """Events stored as a run stores them (event_row's redaction), numbered on from the last."""

    def op(db: Any) -> None:
        last = db.execute("SELECT MAX(seq) FROM run_events WHERE run_id = ?", [run_id]).fetchone()
        seq = last[0] or 0
        for event in events:
            row = event_row(event, [SECRET])
            assert row is not None
            seq += 1
            db.table("run_events").insert({"run_id": run_id, "seq": seq, **row})

    ctx.store.write(op)


def ok_event(host: str, task: str, msg: str) -> dict[str, Any]:
    data = {"host": host, "task": task, "res": {"msg": msg, "changed": False}}
    return {"event": "runner_on_ok", "created": "2026-01-01T00:00:00", "event_data": data}


def test_unknown_deployment_and_run_are_404(sign_in: Callable[..., TestClient]):
    client = sign_in()
    for path in ("/ui/deployments/nope", "/ui/runs/nope", "/ui/runs/nope/log"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "nope" in response.json()["detail"]
    assert (
        client.post(
            "/ui/deployments/nope/rollout/pause", headers={"X-CSRF-Token": csrf_of(client, "/ui/")}
        ).status_code
        == 404
    )


def test_runs_are_listed_a_page_at_a_time(ctx: HubContext, sign_in: Callable[..., TestClient]):
    for i in range(2 * PER_PAGE + 7):
        add_run(ctx, f"r{i:04d}", float(i))
    client = sign_in(role="viewer")
    first = client.get("/ui/runs").text
    assert first.count('href="/ui/runs/r') == PER_PAGE
    assert "r0106" in first and "r0057" in first and "r0056" not in first  # newest first
    assert 'href="?page=2"' in first and 'rel="prev"' not in first
    last = client.get("/ui/runs", params={"page": 3}).text
    assert last.count('href="/ui/runs/r') == 7 and "r0000" in last
    assert 'href="?page=2"' in last and 'rel="next"' not in last
    for bad in ("0", "-1", "x", "100001"):
        response = client.get("/ui/runs", params={"page": bad})
        assert response.status_code == 422, bad
        assert "page" in response.text


def test_audit_search_by_action_actor_and_target(
    ctx: HubContext, sign_in: Callable[..., TestClient]
):
    def write(db: Any) -> None:
        for i in range(60):
            audit.record(db, "user:alice", "rollout.pause", f"deployment:web-{i}", ts=float(i))
        audit.record(db, "user:bob", "rollout.resume", "deployment:web_x", ts=100.0)
        audit.record(db, "user:bob", "rollouts.weird", "deployment:other", ts=101.0)
        audit.record(db, "user:carol", "quota.set", "project:100%", ts=102.0)

    ctx.store.write(write)
    client = sign_in()

    def targets(**search: Any) -> list[str]:
        page = client.get("/ui/audit", params=search)
        assert page.status_code == 200, page.text
        return re.findall(r"<td>((?:deployment|project):[^<]*)</td>", page.text)

    assert targets(action="rollout", actor="bob") == ["deployment:web_x"]  # not rollouts.*
    assert targets(action="rollout.resume") == ["deployment:web_x"]
    assert targets(target="100%") == ["project:100%"]
    assert targets(target="web_") == ["deployment:web_x"]  # _ is no wildcard
    alice = targets(actor="ALI")  # case does not matter
    assert len(alice) == PER_PAGE and alice[0] == "deployment:web-59"
    more = client.get("/ui/audit", params={"actor": "ali", "page": 2}).text
    assert "deployment:web-9<" in more and "deployment:web-10<" not in more
    assert 'href="?actor=ali&amp;page=1"' in more  # the search is kept by the links
    assert targets(action="nothing.like.this") == []
    assert audit.list_entries(ctx, limit=1, action="quota.set")[0]["actor"] == "user:carol"


def test_audit_is_the_global_admins_only(sign_in: Callable[..., TestClient]):
    viewer = sign_in(role="admin")  # a project admin is no global admin
    assert viewer.get("/ui/audit").status_code == 403
    assert 'href="/ui/audit"' not in viewer.get("/ui/").text


def test_a_finished_runs_log_is_shown_whole_and_its_stream_ends(
    ctx: HubContext, sign_in: Callable[..., TestClient]
):
    add_run(ctx, "r1", 1.0, recap='{"edge1-1": {"ok": 3, "changed": 0}}')
    store_events(ctx, "r1", [ok_event("edge1-1", f"task {i}", f"said {i}") for i in range(3)])
    client = sign_in(role="viewer")
    page = client.get("/ui/runs/r1").text
    assert "sse-connect" not in page  # nothing more will come
    assert all(f"said {i}" in page for i in range(3))
    with client.stream("GET", "/ui/runs/r1/log", params={"after": 1}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = "".join(stream.iter_text())
    assert body.index("event: log") < body.index("event: end")
    assert "said 0" not in body and "said 1" in body and "said 2" in body
    assert "data: successful" in body


def test_the_live_log_sends_events_as_they_are_stored_and_ends_with_the_run(ctx: HubContext):
    add_run(ctx, "r4", 1.0, status="running")
    store_events(ctx, "r4", [ok_event("edge1-1", "first", "one")])

    async def follow() -> list[dict[str, str]]:
        stream = log_stream(ctx, "r4", 0)
        sent = [await anext(stream)]
        store_events(ctx, "r4", [ok_event("edge1-1", "second", "two")])  # after the first
        sent.append(await anext(stream))
        finish = "UPDATE runs SET status = 'successful' WHERE id = 'r4'"
        ctx.store.write(lambda db: db.execute(finish))
        sent += [event async for event in stream]
        return sent

    sent = run_async(follow())
    assert [event["event"] for event in sent] == ["log", "log", "end"]
    assert "one" in sent[0]["data"] and "two" in sent[1]["data"] and "one" not in sent[1]["data"]
    assert sent[2]["data"] == "successful"


def test_a_running_runs_page_streams_from_its_last_event(
    ctx: HubContext, sign_in: Callable[..., TestClient]
):
    add_run(ctx, "r2", 1.0, status="running")
    store_events(ctx, "r2", [ok_event("edge1-1", "first", "one")])
    page = sign_in(role="viewer").get("/ui/runs/r2").text
    assert 'sse-connect="/ui/runs/r2/log?after=1"' in page and 'sse-close="end"' in page


def test_no_secret_on_a_runs_page_or_in_its_log(
    ctx: HubContext, sign_in: Callable[..., TestClient]
):
    extravars = redaction.mask_extravars({"db_password": SECRET, "release": "v2"})
    add_run(ctx, "r3", 1.0, extravars=json.dumps(extravars))
    store_events(ctx, "r3", [ok_event("edge1-1", f"login with {SECRET}", f"used {SECRET}")])
    client = sign_in()
    page = client.get("/ui/runs/r3").text
    with client.stream("GET", "/ui/runs/r3/log") as stream:
        log = "".join(stream.iter_text())
    for text in (page, log):
        assert SECRET not in text and "********" in text
    assert "release" in page


def test_gpu_hours_page_and_its_period(sign_in: Callable[..., TestClient]):
    client = sign_in(role="viewer")
    page = client.get("/ui/gpu-hours", params={"period": "7d"})
    assert page.status_code == 200
    assert "By project" in page.text and "By site" in page.text
    assert '<option value="7d" selected>' in page.text
    assert client.get("/ui/gpu-hours", params={"period": "1y"}).status_code == 422


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """`work` on an event loop of its own thread: a session's browser tests leave
    Playwright's loop running on this one, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


@pytest.fixture
def rolling(ctx: HubContext) -> HubContext:
    """Deployment `web` on two hosts with its second revision rolling out, wave 1 of 2."""
    for host in ("edge1-1", "edge2-1"):
        token = enrollment.create_token(ctx, host.split("-")[0], 3600, 1, "user:t")["token"]
        facts = {"hostname": host, "cpu": {"logical_count": 4}, "memory_total_bytes": 2**33}
        enrollment.enroll(ctx, token, fresh_csr(), facts, "1")
    run_async(images.store(ctx, "localhost/aiorch-model:v1", _chunks(b"v1"), "t", 1 << 20))
    deployments.apply(ctx, SPEC.format(note="a"), "user:t")
    deployments.apply(ctx, SPEC.format(note="b"), "user:t")
    return ctx


def test_rollout_buttons_follow_the_role_and_posts_need_csrf(
    rolling: HubContext, sign_in: Callable[..., TestClient]
):
    viewer, operator = sign_in(role="viewer"), sign_in(role="operator")
    seen = viewer.get("/ui/deployments/web").text
    assert "progressing" in seen and "rollout-pause" not in seen
    refused = viewer.post(
        "/ui/deployments/web/rollout/pause", headers={"X-CSRF-Token": csrf_of(viewer, "/ui/")}
    )
    assert refused.status_code == 403 and "viewer" in refused.text
    page = operator.get("/ui/deployments/web").text
    assert 'id="rollout-pause"' in page and "wave 1 of 2" in page
    forged = operator.post("/ui/deployments/web/rollout/pause", headers={"X-CSRF-Token": "x"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    token = csrf_of(operator, "/ui/")
    paused = operator.post("/ui/deployments/web/rollout/pause", headers={"X-CSRF-Token": token})
    assert paused.status_code == 200 and 'id="rollout-resume"' in paused.text
    again = operator.post("/ui/deployments/web/rollout/pause", data={"csrf_token": token})
    assert again.status_code == 409 and "is paused, not progressing" in again.text
    assert 'id="rollout-state" class="badge state-paused"' in again.text


def test_deployments_list_pages(rolling: HubContext, sign_in: Callable[..., TestClient]):
    client = sign_in(role="viewer")
    first = client.get("/ui/deployments").text
    assert 'href="/ui/deployments/web"' in first and 'rel="next"' not in first
    assert "No deployments on this page" in client.get("/ui/deployments?page=2").text
