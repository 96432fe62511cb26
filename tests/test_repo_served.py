"""The hub serves a site repository at /repo: without a token (apt and pip send none),
read-only, and nothing outside the repository directory."""

from __future__ import annotations

from pathlib import Path

import httpx

from aiorch.hub.process import HubProcess


def test_hub_serves_the_repo_read_only(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "debs").mkdir(parents=True)
    (repo / "debs" / "Packages").write_text("Package: chrony\n")
    hub = HubProcess(tmp_path / "hub", repo_dir=repo).start()
    try:
        got = httpx.get(f"{hub.url}/repo/debs/Packages")
        assert got.status_code == 200 and got.text == "Package: chrony\n"
        assert httpx.get(f"{hub.url}/repo/../aiorch.db").status_code == 404
        assert httpx.get(f"{hub.url}/repo/%2e%2e/hub/aiorch.db").status_code == 404
        assert httpx.put(f"{hub.url}/repo/debs/Packages", content=b"x").status_code in (405, 415)
        assert httpx.get(f"{hub.url}/api/v1/hosts").status_code == 401, "the API stays closed"
    finally:
        hub.stop()
