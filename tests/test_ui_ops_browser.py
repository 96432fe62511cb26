"""The operations pages in a real browser against a real hub: a rollout under way, driven by
protocol-level agents, paused and resumed by clicking; a viewer sees no buttons and is refused
if it posts anyway; a post without the session's CSRF token changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from aiorch.wait import wait_until
from tests.fixtures_browser import new_page, screenshot, sign_in
from tests.fixtures_hub import (
    HubProcess,
    checkin_body,
    enroll_agent,
    make_enroll_token,
    make_token,
)
from tests.test_ui_ops import SPEC

pytestmark = pytest.mark.e2e

PAUSE = "/ui/deployments/web/rollout/pause"
CSRF_OF_PAGE = "JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']"


@dataclass
class World:
    hub: HubProcess
    admin: httpx.Client
    viewer_token: str

    def rollout_state(self) -> str:
        response = self.admin.get("/deployments/web/rollout")
        assert response.status_code == 200, response.text
        return str(response.json()["rollout"]["state"])


def report_healthy(hub: HubProcess, agent: dict[str, Any]) -> None:
    """A protocol-level agent: fetch the desired state, then report each workload healthy."""
    url = f"/agents/{agent['agent_id']}/checkin"
    with hub.client(agent["credential"]) as client:
        answer = client.post(url, json=checkin_body())
        assert answer.status_code == 200, answer.text
        revision, desired = answer.json()["revision"], answer.json()["desired"]
        workloads = {
            w["id"]: {"state": "healthy", "template_hash": w["template_hash"]}
            for w in desired["workloads"]
        }
        body = checkin_body(revision) | {"report": {"revision": revision, "workloads": workloads}}
        assert client.post(url, json=body).status_code in (200, 304)


@pytest.fixture(scope="module")
def world(shared_hub: HubProcess) -> Iterator[World]:
    """`web` on two agents, healthy on revision 1, rolling out revision 2: wave 1 of 2 waits
    for a healthy report the agents never send (its deadline is an hour away)."""
    with shared_hub.client(shared_hub.admin_token) as admin:
        agents = [
            enroll_agent(shared_hub, make_enroll_token(admin, site), f"{site}-1")
            for site in ("edge1", "edge2")
        ]
        pushed = admin.post(
            "/images",
            params={"ref": "localhost/aiorch-model:v1"},
            content=b"v1 archive",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert pushed.status_code == 201, pushed.text
        assert admin.post("/deployments", json={"spec": SPEC.format(note="a")}).is_success
        for agent in agents:
            report_healthy(shared_hub, agent)
        second = admin.post("/deployments", json={"spec": SPEC.format(note="b")})
        assert second.status_code == 200 and second.json()["revision"] == 2, second.text
        world = World(shared_hub, admin, make_token(admin, "viewer"))
        assert world.rollout_state() == "progressing"
        yield world


def signed_in(chromium: Browser, world: World, token: str) -> Page:
    page = new_page(chromium, world.hub.url)
    sign_in(page, token)
    return page


def test_an_operator_pauses_and_resumes_the_rollout_by_clicking(
    world: World, chromium: Browser
) -> None:
    page = signed_in(chromium, world, world.hub.admin_token)
    page.click("text=Deployments")
    page.wait_for_url("**/ui/deployments")
    screenshot(page, "deployments")
    page.click("a[href='/ui/deployments/web']")
    assert page.locator("#rollout-state").inner_text() == "progressing"
    assert "wave 1 of 2" in page.locator("#rollout").inner_text()
    assert page.locator("#replicas tbody tr").count() == 2
    screenshot(page, "deployment")
    page.click("#rollout-pause")
    page.locator("#rollout-resume").wait_for()
    assert page.locator("#rollout-state").inner_text() == "paused"
    assert world.rollout_state() == "paused"
    screenshot(page, "deployment-paused")
    page.click("#rollout-resume")
    page.locator("#rollout-pause").wait_for()
    assert world.rollout_state() == "progressing"
    page.goto("/ui/audit?action=rollout")
    actions = page.locator("#audit tbody tr td:nth-child(4)").all_inner_texts()
    assert actions[:2] == ["rollout.resume", "rollout.pause"]
    screenshot(page, "audit")
    page.context.close()


def test_a_viewer_sees_no_buttons_and_its_post_is_refused(world: World, chromium: Browser):
    page = signed_in(chromium, world, world.viewer_token)
    page.goto("/ui/deployments/web")
    assert page.locator("#rollout-state").inner_text() == world.rollout_state()
    assert page.locator("#rollout button").count() == 0
    assert page.locator("a[href='/ui/audit']").count() == 0
    before = world.rollout_state()
    status = page.evaluate(
        """async ([url, token]) => (await fetch(url, {method: "POST",
             headers: {"X-CSRF-Token": token}})).status""",
        [PAUSE, page.evaluate(CSRF_OF_PAGE)],
    )
    assert status == 403
    assert world.rollout_state() == before
    page.context.close()


def test_a_forged_post_without_the_csrf_token_changes_nothing(world: World, chromium: Browser):
    page = signed_in(chromium, world, world.hub.admin_token)
    page.goto("/ui/deployments/web")
    before = world.rollout_state()
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
        forged = page.request.post(f"{world.hub.url}{PAUSE}", headers=headers)
        assert forged.status == 403, forged.text()
        assert "CSRF" in forged.json()["detail"]
    assert world.rollout_state() == before
    page.context.close()


def test_runs_and_gpu_hours_pages(world: World, chromium: Browser):
    """A real run that stops at pre-flight (the agents' hosts have no SSH here): its page shows
    the per-host reason, and the whole log at once."""
    started = world.admin.post(
        "/runs", json={"playbook": "base.yml", "limit": "edge1-1", "check": True}
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    wait_until(
        lambda: world.admin.get(f"/runs/{run_id}").json()["status"] not in ("queued", "running"),
        timeout=60,
        what=f"run {run_id} to end",
    )
    page = signed_in(chromium, world, world.hub.admin_token)
    page.goto("/ui/runs")
    page.click(f"a[href='/ui/runs/{run_id}']")
    assert page.locator("#run-status").inner_text() == "failed"
    assert "pre-flight" in page.locator("#recap").inner_text()
    assert page.locator("[sse-connect]").count() == 0
    screenshot(page, "run")
    page.goto("/ui/runs")
    screenshot(page, "runs")
    page.goto("/ui/gpu-hours")
    page.select_option("#period", "7d")
    page.wait_for_url("**/ui/gpu-hours?period=7d")
    assert page.locator("#period").input_value() == "7d"
    screenshot(page, "gpu-hours")
    page.context.close()
