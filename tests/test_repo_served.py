"""The hub serves a site repository at /repo: without a token (apt and pip send none),
read-only, and nothing outside the repository directory."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aiorch.endpoint import hub_tls
from tests.fixtures_hub import HubProcess

pytestmark = pytest.mark.e2e  # starts its own hub, outside the hub fixtures

SECRET = "the hub's own secret\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub serving `repo/`, beside it `secret.txt` and the hub's own data dir."""
    root = tmp_path_factory.mktemp("served")
    repo = root / "repo"
    (repo / "debs").mkdir(parents=True)
    (repo / "debs" / "Packages").write_text("Package: chrony\n")
    (root / "secret.txt").write_text(SECRET)
    (repo / "debs" / "inside-link").symlink_to(repo / "debs" / "Packages")
    (repo / "outside-link").symlink_to(root / "secret.txt")
    (repo / "outside-dir").symlink_to(root, target_is_directory=True)
    hub = HubProcess(root / "hub", repo_dir=repo).start()
    yield hub
    hub.stop()


def _client(hub: HubProcess) -> httpx.Client:
    """No token (apt and pip send none), the hub verified by its CA as hosts verify it."""
    return httpx.Client(base_url=hub.url, verify=hub_tls(hub.ca_path))


def raw_get(hub: HubProcess, target: str) -> httpx.Response:
    """GET with `target` sent byte for byte: httpx would otherwise collapse `..` first."""
    with _client(hub) as client:
        return client.get("/", extensions={"target": target.encode()})


def test_hub_serves_the_repo_read_only(served: HubProcess):
    assert served.url.startswith("https://")
    with _client(served) as client:
        got = client.get("/repo/debs/Packages")
        assert got.status_code == 200 and got.text == "Package: chrony\n"
        # Refused: as a method /repo lacks, or (authentication first) as unauthenticated.
        assert client.put("/repo/debs/Packages", content=b"x").status_code in (401, 405, 415)
        assert client.get("/repo/debs/Packages").text == "Package: chrony\n"
        assert client.get("/api/v1/hosts").status_code == 401, "the API stays closed"


def test_raw_targets_reach_the_hub_uncollapsed(served: HubProcess):
    """Collapsed, this target is /repo/debs/Packages (200): so the traversal tests below
    really send their dots."""
    assert raw_get(served, "/repo/debs/Packages").status_code == 200
    assert raw_get(served, "/nothing/../repo/debs/Packages").status_code == 404


@pytest.mark.parametrize(
    "target",
    [
        "/repo/../secret.txt",
        "/repo/../hub/aiorch.db",
        "/repo/debs/../../secret.txt",
        "/repo/%2e%2e/secret.txt",
        "/repo/%2E%2E/hub/aiorch.db",
        "/repo/..%2fsecret.txt",
        "/repo/debs%2f..%2f..%2fsecret.txt",
        "/repo/%2e%2e%2fhub%2faiorch.db",
        "/repo/..%5csecret.txt",
        "/repo//%2e%2e//secret.txt",
    ],
)
def test_traversal_out_of_the_repo_is_refused(served: HubProcess, target: str):
    got = raw_get(served, target)
    assert got.status_code == 404, (target, got.status_code)
    assert SECRET not in got.text and "SQLite format" not in got.text


def test_symlinks_out_of_the_repo_are_not_followed(served: HubProcess):
    assert raw_get(served, "/repo/debs/inside-link").text == "Package: chrony\n"
    for target in ("/repo/outside-link", "/repo/outside-dir/secret.txt"):
        got = raw_get(served, target)
        assert got.status_code == 404 and SECRET not in got.text, target
