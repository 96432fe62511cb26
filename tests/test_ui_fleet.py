"""The fleet and host pages over a real hub: pages a viewer can read, the host list a page at
a time, a 404 for an unknown host, and the series route that hands charts.js its points with
a null inside every gap."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from aiorch.hub.services.chart_columns import columns, per_second, with_gaps
from tests.fixtures_hub import HubProcess, enroll_agent, make_enroll_token, make_token

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SITE_HOSTS = 60  # more than one page (50)
GPU = {"gpu": "0", "uuid": "GPU-1", "product": "L4", "simulated": "true"}


def _signed_in(hub: HubProcess, token: str) -> httpx.Client:
    client = hub.client(root=True)
    form = CSRF.search(client.get("/ui/login").text)
    assert form is not None
    answer = client.post("/ui/login", data={"csrf_token": form.group(1), "token": token})
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture(scope="module")
def fleet(shared_hub: HubProcess) -> dict[str, str]:
    """A site of SITE_HOSTS imported hosts, and one enrolled host whose simulated GPU sent
    utilization with a silence in the middle: points at -300, -290, -280, then -60 s."""
    hosts = {f"big-{i:03d}": None for i in range(SITE_HOSTS)}
    inventory = {"all": {"children": {"big": {"vars": {"aiorch_site": "big"}, "hosts": hosts}}}}
    with shared_hub.client(shared_hub.admin_token) as admin:
        imported = admin.post(
            "/inventory/import",
            json={"content": yaml.safe_dump(inventory), "filename": "big.yml"},
        )
        assert imported.status_code == 200, imported.text
        enrolled = enroll_agent(shared_hub, make_enroll_token(admin, "dc1"), "ui-gpu-1")
        viewer = make_token(admin, "viewer")
    now = time.time()
    times = [now - 300, now - 290, now - 280, now - 60]
    batch = {
        "epoch": "e1",
        "seq_start": 0,
        "seq_end": len(times) - 1,
        "series": [{"metric": "gpu_utilization_percent", "labels": GPU}],
        "samples": [[i, ts, 0, 40.0 + i] for i, ts in enumerate(times)],
    }
    with shared_hub.client(enrolled["credential"]) as agent:
        sent = agent.post(f"/agents/{enrolled['agent_id']}/telemetry", json=batch)
        assert sent.status_code == 200, sent.text
    return {"host": "ui-gpu-1", "viewer": viewer}


@pytest.fixture
def viewer(shared_hub: HubProcess, fleet: dict[str, str]) -> Iterator[httpx.Client]:
    client = _signed_in(shared_hub, fleet["viewer"])
    yield client
    client.close()


def test_a_viewer_sees_the_fleet_counts_with_simulated_gpus_apart(viewer: httpx.Client):
    page = viewer.get("/ui/")
    assert page.status_code == 200
    assert 'hx-get="/ui/fleet/summary"' in page.text and "every 10s" in page.text
    fragment = viewer.get("/ui/fleet/summary", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text, "the fragment is the counts alone"
    dc1 = re.search(r'<tr data-site="dc1">(.*?)</tr>', fragment.text, re.S)
    assert dc1 is not None
    assert "+1 simulated at 43%" in dc1.group(1), dc1.group(1)
    big = re.search(r'<tr data-site="big">(.*?)</tr>', fragment.text, re.S)
    assert big is not None and f"<td>{SITE_HOSTS}</td>" in big.group(1)


def test_the_host_list_is_50_a_page_with_next_and_previous(viewer: httpx.Client):
    first = viewer.get("/ui/hosts", params={"site": "big"})
    assert first.status_code == 200
    names = re.findall(r'<tr data-host="([^"]+)">', first.text)
    assert names == [f"big-{i:03d}" for i in range(50)]
    assert (
        'href="/ui/hosts?site=big&amp;page=2"' in first.text and 'id="previous"' not in first.text
    )
    second = viewer.get("/ui/hosts", params={"site": "big", "page": 2})
    names = re.findall(r'<tr data-host="([^"]+)">', second.text)
    assert names == [f"big-{i:03d}" for i in range(50, SITE_HOSTS)]
    assert 'id="previous"' in second.text and 'id="next"' not in second.text


def test_a_page_past_the_last_is_404_and_page_zero_422(viewer: httpx.Client):
    past = viewer.get("/ui/hosts", params={"site": "big", "page": 3})
    assert past.status_code == 404 and "past the last page (2)" in past.json()["detail"]
    assert viewer.get("/ui/hosts", params={"page": 0}).status_code == 422


def test_an_unknown_host_is_404(viewer: httpx.Client):
    page = viewer.get("/ui/hosts/no-such-host")
    assert page.status_code == 404
    assert page.json()["detail"] == "no host named no-such-host"
    series = viewer.get("/ui/hosts/no-such-host/series", params={"metric": "x"})
    assert series.status_code == 404


def test_the_host_page_shows_its_gpu_and_a_chart_for_each_metric(
    viewer: httpx.Client, fleet: dict[str, str]
):
    page = viewer.get(f"/ui/hosts/{fleet['host']}")
    assert page.status_code == 200
    urls = re.findall(r'data-series-url="([^"]+)"', page.text)
    assert any("metric=gpu_utilization_percent" in url for url in urls)
    assert any("metric=net_receive_bytes_total" in url for url in urls)
    assert len(urls) == 10
    assert '<script src="/ui/static/charts.js"' in page.text


def test_the_series_route_puts_a_null_inside_the_gap(viewer: httpx.Client, fleet: dict[str, str]):
    answer = viewer.get(
        f"/ui/hosts/{fleet['host']}/series",
        params={"metric": "gpu_utilization_percent", "since": 600},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["points"] == 4
    assert body["series"] == [{"label": "gpu=0 (simulated)", "simulated": True, "gaps": 1}]
    times, values = body["tables"][0]
    assert values == [40.0, 41.0, 42.0, None, 43.0]
    assert times[2] < times[3] < times[4], "the null lies inside the silence"


def test_the_series_route_refuses_a_bad_range(viewer: httpx.Client, fleet: dict[str, str]):
    for since in ("-5", "inf", "soon"):
        answer = viewer.get(
            f"/ui/hosts/{fleet['host']}/series", params={"metric": "m", "since": since}
        )
        assert answer.status_code == 422, since


def test_pages_without_a_session_go_to_sign_in(shared_hub: HubProcess):
    with shared_hub.client(root=True) as anonymous:
        for path in (
            "/ui/hosts",
            "/ui/hosts/x",
            "/ui/hosts/x/series?metric=m",
            "/ui/fleet/summary",
        ):
            answer = anonymous.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"


def test_counter_rates_skip_gaps_and_resets():
    points = [[0.0, 100.0], [10.0, 200.0], [100.0, 300.0], [110.0, 50.0], [120.0, 150.0]]
    assert per_second(points, [[10.0, 100.0]]) == [[10.0, 10.0], [120.0, 10.0]]


def test_a_null_marks_each_gap_and_is_not_counted_as_a_point():
    assert with_gaps([[0, 1], [10, 2], [60, 3]], [[10, 60]]) == [[0, 10, 35.0, 60], [1, 2, None, 3]]
    answer = {"host": "h", "metric": "m", "from": 0, "to": 70, "resolution": "raw"}
    answer["series"] = [{"labels": {}, "points": [[0, 1], [60, 3]], "gaps": [[0, 60]]}]
    assert columns(answer)["points"] == 2
