"""Test tiers that cannot lie: markers follow the fixtures a test uses, a hub or a lab used
without its marker fails the test, every test has a time limit, and a missing lab skips
only on a developer's machine.

Registered from tests/conftest.py (``pytest_plugins``). `make test-unit` selects by these
markers, so a hub started by an unmarked test would slip hub processes into the unit tier.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import pytest

from aiorch.errors import UserError
from aiorch.hub.process import HubProcess
from aiorch.lab.podman import preflight

# Shared fixtures that start a hub under uvicorn, or need the podman lab. A test module's own
# fixture that does either marks its module instead (``pytestmark``); the guards catch a miss.
HUB_FIXTURES = frozenset({"hub", "shared_hub", "provision_lab", "metal_hub"})
LAB_FIXTURES = frozenset({"lab", "lab_factory", "provision_lab", "metal_hub", "metal"})

# Seconds per test (setup, call and teardown): a lab test may build the lab image, boot
# hosts and provision them; an e2e test starts hubs and CLIs; a unit test does neither.
TIMEOUTS = {"lab": 1200, "e2e": 300}
LAB_GROUP = "lab"
# The demo and the air-gapped hub: each brings up its own lab from the bundle cache.
OWN_LABS_GROUP = "lab-own"

_running: list[pytest.Item] = []


def lab_required(env: Mapping[str, str] = os.environ) -> bool:
    """Under CI (``CI`` set, as `.ci/run` does) or `make test` (``AIORCH_REQUIRE_LAB=1``), a
    lab test that cannot run is a failure: a green run must mean the lab tier ran."""
    ci = env.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or env.get("AIORCH_REQUIRE_LAB", "") == "1"


def missing_lab(reason: str, env: Mapping[str, str] = os.environ) -> NoReturn:
    """Skip on a developer's machine; fail where the lab tier is required."""
    if lab_required(env):
        message = f"the lab is required here (CI or AIORCH_REQUIRE_LAB=1): {reason}"
        pytest.fail(message, pytrace=False)
    pytest.skip(f"no lab on this machine: {reason}")


def require_lab() -> None:
    """What every lab fixture calls first: the current test is marked ``lab``, so the machine
    check (`pytest_runtest_setup` below) ran before any fixture."""
    require_marker("lab", "uses the podman lab")


def _require_lab_machine() -> None:
    """The machine can run the lab (root, podman, nft, ...), or the test skips or fails."""
    try:
        preflight()
    except UserError as exc:
        missing_lab(str(exc))


def require_marker(name: str, what: str) -> None:
    """Fail the running test when it does `what` without carrying marker `name`."""
    if _running and _running[-1].get_closest_marker(name) is None:
        nodeid = _running[-1].nodeid
        pytest.fail(
            f"{nodeid} {what} but is not marked {name}: "
            f"add `pytestmark = pytest.mark.{name}` to its module",
            pytrace=False,
        )


def _guarded(start: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(start)
    def guarded_start(self: HubProcess, *args: Any, **kwargs: Any) -> Any:
        require_marker("e2e", "starts a real hub under uvicorn")
        return start(self, *args, **kwargs)

    guarded_start.__wrapped_by_tiers__ = True  # type: ignore[attr-defined]
    return guarded_start


def pytest_configure(config: pytest.Config) -> None:
    """Guard every hub start in this test process, whichever HubProcess class a test uses."""
    if not getattr(HubProcess.start, "__wrapped_by_tiers__", False):
        HubProcess.start = _guarded(HubProcess.start)  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by fixture before `-m` selects, give each test its tier's time limit, and group
    the tests for xdist (`make test` runs ``--dist loadgroup``)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & HUB_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        if names & LAB_FIXTURES:
            item.add_marker(pytest.mark.lab)
        if item.get_closest_marker("timeout") is None:
            for tier, seconds in TIMEOUTS.items():
                if item.get_closest_marker(tier) is not None:
                    item.add_marker(pytest.mark.timeout(seconds))
                    break
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
    if hasattr(config, "workerinput"):
        # The lab group is the long pole: scheduled first, the other groups fill in beside it.
        items.sort(key=lambda item: item.get_closest_marker("lab") is None)


def xdist_group(item: pytest.Item) -> str:
    """The lab tier is one group, so one worker runs it in order with one shared lab and the
    caches its fixtures build; any other test goes with its module, so a module's fixtures
    are built once. A lab module that brings up its own labs from caches no other group
    touches names its own group (``OWN_LABS_GROUP``) and runs beside the lab tier."""
    if item.get_closest_marker("lab") is not None:
        return LAB_GROUP
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A lab test meets the lab check before any fixture runs: none of them (a site repository
    build, the demo) turns a missing podman into an error instead of a skip or a failure."""
    if item.get_closest_marker("lab") is not None:
        _require_lab_machine()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Remember which test runs, so that the guards can read its markers."""
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()
