"""`aiorch hub serve --log-format json`: one JSON object a line, each request's lines carrying
the id the API echoes in X-Request-ID, and no credential in any of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiorch.wait import wait_until
from tests.fixtures_hub import AIORCH, HubProcess, make_enroll_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def json_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    data_dir = tmp_path_factory.mktemp("logs") / "hub"
    process = HubProcess(data_dir, log_level="debug", serve_args=["--log-format", "json"])
    yield process.start()
    process.stop()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_line_is_json_and_a_request_is_found_by_the_id_it_was_given(
    json_hub: HubProcess,
) -> None:
    with json_hub.client("aiorch_wrong-token-value") as client:
        refused = client.get("/status", headers={"X-Request-ID": "support-case-42"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "support-case-42"

    def logged() -> list[dict[str, Any]]:  # the hub writes its access line after answering
        return [r for r in _records(json_hub.log) if r.get("request_id") == "support-case-42"]

    mine = wait_until(logged, timeout=10, what="the request's log line")
    records = _records(json_hub.log)  # json.loads fails the test on any non-JSON line
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert mine and mine[-1]["status"] == 401 and mine[-1]["path"] == "/api/v1/status"
    assert mine[-1]["level"] == "INFO"


def test_a_caller_without_an_id_or_with_an_odd_one_gets_a_fresh_one(
    json_hub: HubProcess,
) -> None:
    with json_hub.client(json_hub.admin_token) as client:
        plain = client.get("/status")
        odd = client.get("/status", headers={"X-Request-ID": "has spaces\tand tabs"})
    for response in (plain, odd):
        assert response.status_code == 200
        assert len(response.headers["x-request-id"]) == 32
    assert plain.headers["x-request-id"] != odd.headers["x-request-id"]
    assert "has spaces" not in json_hub.log.read_text()


def test_no_credential_reaches_the_json_log(json_hub: HubProcess) -> None:
    with json_hub.client(json_hub.admin_token) as admin:
        enroll_token = make_enroll_token(admin, site="logs")
        admin.get("/status")
        admin.post("/enroll-tokens", json={"site": "x", "bogus": enroll_token})  # a 422
    with json_hub.client(root=True) as anonymous:
        anonymous.post("/api/v1/enroll", json={"token": enroll_token, "csr": "not a csr"})
    text = json_hub.log.read_text()
    assert _records(json_hub.log)
    for secret in (json_hub.admin_token, enroll_token):
        assert secret not in text
        assert secret.split("_", 1)[-1] not in text


def test_a_wrong_log_format_is_a_one_line_error(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [AIORCH, "hub", "serve", "--data-dir", str(tmp_path / "h"), "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--log-format wants text or json" in result.stderr
    assert "Traceback" not in result.stderr
