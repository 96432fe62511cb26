"""The dashboard in a real browser over a hub whose agents run on the shared lab's three hosts
(simulated GPUs): signing in (and a wrong token refused on the page), the fleet page counting
every lab host online (and htmx refreshing the counts without reloading the page),
the host list, and a host page whose GPU utilization chart uPlot drew from real points."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from aiorch.endpoint import hub_tls
from aiorch.hub.process import HubProcess
from aiorch.lab import Lab
from aiorch.wait import wait_until
from tests.fixtures_agents import LabAgent
from tests.fixtures_browser import new_page, screenshot, sign_in

pytestmark = [pytest.mark.lab, pytest.mark.e2e]  # the module starts a hub

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
UTILIZATION = "gpu_utilization_percent"


@pytest.fixture(scope="module")
def lab_hub(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub on the lab's gateway; its agents round every 2 s, so charts fill quickly."""
    hub = HubProcess(tmp_path_factory.mktemp("ui-lab") / "hub", poll_interval=2)
    hub.listen = [f"{lab.gateway}:{hub.port}"]
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def admin(lab_hub: HubProcess) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {lab_hub.admin_token}"}
    with httpx.Client(
        base_url=f"{lab_hub.url}/api/v1", headers=auth, timeout=30, verify=hub_tls(lab_hub.ca_path)
    ) as client:
        yield client


@pytest.fixture(scope="module")
def lab_agents(
    lab: Lab, lab_hub: HubProcess, admin: httpx.Client, agent_lib: Path
) -> Iterator[list[str]]:
    """An agent on every lab host (one simulated L4 each), enrolled at site `lab`, online;
    yields the host names. The agents are stopped afterwards: the lab is shared."""
    token = admin.post("/enroll-tokens", json={"site": "lab", "uses": 10}).json()["token"]
    url = f"https://{lab.gateway}:{lab_hub.port}"
    agents = [
        LabAgent(lab, host.name, url, agent_lib, gpu_backend="simulated:1xL4-24GB")
        for host in lab.hosts
    ]
    try:
        for agent in agents:
            agent.stop()
            agent.sh(f"rm -rf {agent.config['state_dir']}")
            agent.install()
            agent.enroll(token)
            agent.start()
        wait_until(
            lambda: sum(a["status"] == "online" for a in admin.get("/agents").json()) == 3,
            timeout=90,
            what="every lab agent online",
        )
        yield sorted(row["name"] for row in admin.get("/hosts").json())
    finally:
        for agent in agents:
            agent.stop()


@pytest.fixture
def page(lab: Lab, chromium: Browser, lab_hub: HubProcess) -> Iterator[Page]:
    """`lab` first: it must be up before Playwright's event loop runs in this thread (the lab
    sets up its network through pyroute2, which runs an event loop of its own)."""
    opened = new_page(chromium, lab_hub.url)
    yield opened
    opened.context.close()


def _publish(name: str, page: Page) -> None:
    """The screenshot for people to review, and the README's copy of it."""
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot(page, name), DOCS_IMAGES / f"dashboard-{name}.png")


def test_a_wrong_token_is_refused_on_the_page(page: Page) -> None:
    page.goto("/ui/login")
    page.fill("#token", "aiorch_not-a-real-token")
    page.click("#sign-in")
    expect(page.locator("p.error")).to_contain_text("Sign-in refused")
    assert page.url.endswith("/ui/login")
    page.goto("/ui/")
    assert page.url.endswith("/ui/login"), "no session was made"


def test_the_fleet_page_counts_every_lab_host_and_lists_them(
    page: Page, lab: Lab, lab_hub: HubProcess, lab_agents: list[str]
) -> None:
    assert lab_agents == sorted(host.name for host in lab.hosts)
    sign_in(page, lab_hub.admin_token)
    expect(page.locator("h1")).to_have_text("Fleet")
    totals = page.locator("#fleet-totals")
    expect(totals).to_contain_text("3 hosts")
    expect(totals).to_contain_text("3 online")
    expect(page.locator('tr[data-site="lab"]')).to_contain_text("+3 simulated")
    # The live part: htmx asks for fresh counts and swaps them in, the page is not reloaded.
    with page.expect_response("**/ui/fleet/summary", timeout=25_000) as refreshed:
        pass
    assert refreshed.value.ok
    expect(totals).to_contain_text("3 online")
    _publish("fleet", page)
    page.click("#all-hosts")
    for name in lab_agents:
        row = page.locator(f'tr[data-host="{name}"]')
        expect(row).to_contain_text("online")
        expect(row.locator(".badge.simulated")).to_have_text("simulated")


def test_a_host_page_draws_its_gpu_chart_from_real_points(
    page: Page, lab_hub: HubProcess, admin: httpx.Client, lab_agents: list[str]
) -> None:
    host = lab_agents[0]

    def points() -> int:
        answer = admin.get("/telemetry/series", params={"host": host, "metric": UTILIZATION})
        return sum(len(s["points"]) for s in answer.json()["series"]) if answer.is_success else 0

    wait_until(lambda: points() >= 3, timeout=60, what=f"{host} to send utilization")
    stored = points()
    sign_in(page, lab_hub.admin_token)
    page.goto(f"/ui/hosts/{host}")
    expect(page.locator("#gpus")).to_contain_text("simulated")
    chart = page.locator(f'.chart[data-series-url*="metric={UTILIZATION}"]')
    expect(chart).to_have_attribute("data-state", "drawn")
    assert int(chart.get_attribute("data-points") or 0) >= stored
    expect(chart.locator("canvas")).to_have_count(1)
    cpu = page.locator('.chart[data-series-url*="metric=host_cpu_utilization_percent"]')
    expect(cpu).to_have_attribute("data-state", "drawn")
    _publish("host", page)
