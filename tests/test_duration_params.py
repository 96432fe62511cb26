"""Duration query parameters are finite and bounded: a 422 naming the parameter, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aiorch.hub.routers.telemetry import MAX_DURATION_S
from tests.fixtures_hub import HubProcess, enroll_agent, make_enroll_token

SERIES = "/telemetry/series?host=dur-1&metric=gpu_utilization_percent&"
GPU_HOURS = "/accounting/gpu-hours?"


@pytest.fixture(scope="module")
def viewer(shared_hub: HubProcess) -> Iterator[httpx.Client]:
    """A client on a hub with one enrolled host, so the series route reaches its query."""
    with shared_hub.client(shared_hub.admin_token) as client:
        enroll_agent(shared_hub, make_enroll_token(client, "edge1"), "dur-1")
        yield client


@pytest.mark.e2e
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308", str(MAX_DURATION_S + 1)])
@pytest.mark.parametrize("route", [SERIES, GPU_HOURS])
def test_unbounded_since_s_is_422(viewer: httpx.Client, route: str, value: str):
    answer = viewer.get(f"{route}since_s={value}")
    assert answer.status_code == 422, answer.text
    assert "since_s" in answer.json()["detail"]


@pytest.mark.e2e
def test_until_s_is_bounded_too(viewer: httpx.Client):
    answer = viewer.get(f"{SERIES}until_s=inf")
    assert answer.status_code == 422 and "until_s" in answer.json()["detail"]


@pytest.mark.e2e
@pytest.mark.parametrize("route", [SERIES, GPU_HOURS])
def test_longest_since_s_is_answered(viewer: httpx.Client, route: str):
    assert viewer.get(f"{route}since_s={MAX_DURATION_S}").status_code == 200
