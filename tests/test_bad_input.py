"""Bad input gets a 4xx that names the problem, never a 500, and stores nothing."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Request

from aiorch.hub.app import create_app
from aiorch.hub.connections import ConnectionLimits, RateLimitedLog, protocol_class
from aiorch.hub.process import free_port
from aiorch.wait import wait_until
from tests.fixtures_hub import (
    Clock,
    HubProcess,
    checkin_body,
    enroll_agent,
    enroll_request,
    make_enroll_token,
    tls_context,
)


def _tokens(admin: httpx.Client) -> list:
    return admin.get("/enroll-tokens").json()


def test_bad_json_is_422(shared_hub: HubProcess, admin: httpx.Client):
    before = _tokens(admin)
    response = admin.post(
        "/enroll-tokens", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    assert _tokens(admin) == before


def test_missing_field_is_422_naming_it(admin: httpx.Client):
    response = admin.post("/enroll-tokens", json={"ttl_s": 60})
    assert response.status_code == 422 and "body.site" in response.json()["detail"]


def test_unknown_field_is_422_naming_it(admin: httpx.Client):
    response = admin.post("/enroll-tokens", json={"site": "edge1", "colour": "red"})
    assert response.status_code == 422 and "colour" in response.json()["detail"]


def test_wrong_content_type_is_415(admin: httpx.Client):
    response = admin.post(
        "/enroll-tokens", content=b"site=edge1", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415 and "text/plain" in response.json()["detail"]


def test_oversized_body_is_413(admin: httpx.Client):
    huge = b'{"site": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    response = admin.post(
        "/enroll-tokens", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_oversized_chunked_body_is_413(admin: httpx.Client):
    def chunks():
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    response = admin.post(
        "/enroll-tokens", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_bad_site_name_is_422(admin: httpx.Client):
    response = admin.post("/enroll-tokens", json={"site": "no spaces allowed"})
    assert response.status_code == 422 and "body.site" in response.json()["detail"]


def test_revoking_unknown_token_is_404(admin: httpx.Client):
    response = admin.delete("/tokens/doesnotexist")
    assert response.status_code == 404 and "doesnotexist" in response.json()["detail"]


def test_desired_state_for_unknown_agent_is_404(admin: httpx.Client):
    response = admin.put("/agents/nobody/desired", json={"document": {}})
    assert response.status_code == 404 and "nobody" in response.json()["detail"]


def test_enroll_without_hostname_is_422(shared_hub: HubProcess, admin: httpx.Client):
    token = admin.post("/enroll-tokens", json={"site": "edge1"}).json()["token"]
    _, body = enroll_request(token, "unnamed")
    with shared_hub.client() as client:
        response = client.post("/enroll", json={**body, "facts": {}})
    assert response.status_code == 422 and "hostname" in response.json()["detail"]
    listed = [t for t in admin.get("/enroll-tokens").json() if token.split("_")[1] == t["id"]]
    assert listed[0]["uses"] == 0, "a refused enrollment spends no use of the token"


def test_rollout_of_unknown_deployment_is_404(admin: httpx.Client):
    response = admin.get("/deployments/nope/rollout")
    assert response.status_code == 404 and "nope" in response.json()["detail"]
    assert admin.post("/deployments/nope/rollout/pause").status_code == 404


def test_unknown_rollout_action_is_422(admin: httpx.Client):
    response = admin.post("/deployments/nope/rollout/explode")
    assert response.status_code == 422 and "action" in response.json()["detail"]


# ---- hostile users: bounded counts and numbers, small answers, the hub keeps serving --------

SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: {name}, project: nlp}}
spec:
  image: localhost/m:v1
  replicas: {replicas}
  resources: {{gpus: {gpus}, cpu: {cpu}}}
"""


def _still_serving(hub: HubProcess) -> None:
    """Everyone else is still served: /healthz and an agent's check-in."""
    with hub.client(root=True) as client:
        assert client.get("/healthz").status_code == 200
    with hub.client(hub.admin_token) as admin:
        enrolled = enroll_agent(hub, make_enroll_token(admin), f"bystander-{uuid.uuid4().hex[:8]}")
    with hub.client(enrolled["credential"]) as agent:
        path = f"/agents/{enrolled['agent_id']}/checkin"
        assert agent.post(path, json=checkin_body()).status_code == 200


@pytest.mark.parametrize(
    ("replicas", "gpus", "cpu", "words"),
    [
        (10_000_000, 0, 1, "spec.replicas: must be <= 10000"),
        (1, 1000, 1, "spec.resources.gpus: must be <= 64"),
        (1, 0, ".inf", "spec.resources.cpu: must be a finite number"),
        (1, 0, ".nan", "spec.resources.cpu: must be a finite number"),
    ],
    ids=["replicas", "gpus", "cpu-inf", "cpu-nan"],
)
def test_spec_count_out_of_bounds_is_a_fast_422_naming_it_and_stores_nothing(
    shared_hub: HubProcess, admin: httpx.Client, replicas: int, gpus: int, cpu: str, words: str
):
    spec = SPEC.format(name="huge", replicas=replicas, gpus=gpus, cpu=cpu)
    for path in ("/deployments/plan", "/deployments"):
        started = time.monotonic()
        response = admin.post(path, json={"spec": spec})
        assert response.status_code == 422 and words in response.json()["detail"]
        assert time.monotonic() - started < 2
    assert admin.get("/deployments").json() == []
    _still_serving(shared_hub)


def test_plan_answer_summarises_unplaced_replicas(shared_hub: HubProcess, admin: httpx.Client):
    spec = SPEC.format(name="many", replicas=10_000, gpus=1, cpu=0)
    response = admin.post("/deployments/plan", json={"spec": spec})
    assert response.status_code == 200
    (unplaced,) = response.json()["plan"]["unplaced"]
    assert unplaced["count"] == 10_000 and "GPU" in unplaced["reason"]
    assert len(response.content) < 4096


def test_plan_cli_prints_unplaced_replicas_as_one_line(shared_hub: HubProcess, tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(SPEC.format(name="many", replicas=500, gpus=1, cpu=0))
    out = shared_hub.cli("plan", "-f", str(path)).stdout
    assert "unplaced 500 replicas: " in out and len(out.splitlines()) < 10


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ("[" * 300 + "]" * 300, "nested deeper than 32"),
        ("NaN", "finite"),
        ("-Infinity", "finite"),
        (str(2**70), "64 bits"),
    ],
    ids=["deep", "nan", "infinity", "huge-int"],
)
def test_desired_state_that_json_cannot_give_back_is_422_and_not_stored(
    shared_hub: HubProcess, admin: httpx.Client, document: str, words: str
):
    host = f"desired-bad-{uuid.uuid4().hex[:8]}"  # each case its own host: no takeover
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), host)
    path = f"/agents/{enrolled['agent_id']}/desired"
    text = '{"document": {"workloads": [], "x": ' + document + "}}"
    response = admin.put(path, content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and words in response.json()["detail"]
    assert admin.get(path).json()["revision"] == 0
    assert admin.get("/agents").status_code == 200, "the same kept-alive connection still works"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/quotas/nlp", {"max_gpus": 2**70}),
        ("POST", "/runs", {"playbook": "site.yml", "serial": 2**70}),
        ("POST", "/enroll-tokens", {"site": "edge1", "uses": 2**70}),
    ],
    ids=["quota", "run-serial", "enroll-uses"],
)
def test_integers_past_64_bits_in_the_api_are_422(
    admin: httpx.Client, method: str, path: str, body: dict
):
    response = admin.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert admin.get("/agents").status_code == 200


def test_revoking_the_last_admin_token_is_409(hub: HubProcess):
    with hub.client(hub.admin_token) as admin:
        (bootstrap,) = [t for t in admin.get("/tokens").json() if t["global_admin"]]
        refused = admin.delete(f"/tokens/{bootstrap['id']}")
        assert refused.status_code == 409 and "last active admin" in refused.json()["detail"]
        created = admin.post("/tokens", json={"global_admin": True, "name": "second"})
        second = created.json()["token"]
    with hub.client(second) as other:
        assert other.delete(f"/tokens/{bootstrap['id']}").status_code == 204


# ---- errors and connections -------------------------------------------------------------


@pytest.mark.e2e
def test_a_500_leaves_the_kept_alive_connection_open(make_context):
    app = create_app(make_context(), run_jobs=False)

    @app.get("/port")
    def port(request: Request) -> int:
        return request.client.port if request.client else 0

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with _served(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        before = client.get("/port").json()
        failed = client.get("/boom")
        assert failed.status_code == 500 and "hub log" in failed.json()["detail"]
        assert client.get("/port").json() == before, "the next request reuses the connection"


class _FewFilesHub(HubProcess):
    """A hub whose process may hold 256 open files, as on a small edge server."""

    def argv(self) -> list[str]:
        return ["prlimit", "--nofile=256:256", "--", *super().argv()]


def _connect(hub: HubProcess, tls: bool, timeout: float | None = None) -> socket.socket:
    """A connection to the hub: TLS handshake done (an idle or slow client), or bare TCP that
    never starts one."""
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=timeout)
    return tls_context(hub.ca_path).wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock


def _closed_by_hub(sock: socket.socket) -> bool:
    """The hub closed the connection: end of stream, with or without TLS's close_notify."""
    try:
        return sock.recv(1024) == b""
    except (ssl.SSLEOFError, ConnectionResetError):
        return True


@pytest.mark.e2e
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "bare-tcp"])
def test_idle_connections_never_starve_healthz_or_checkins(tmp_path, tls: bool):
    hub = _FewFilesHub(tmp_path / "hub").start()
    idle = []
    try:
        for _ in range(300):  # more than the hub has descriptors
            idle.append(_connect(hub, tls))
        _still_serving(hub)
        assert hub.log.stat().st_size < 64 * 1024, "the flood fills no log"
    finally:
        for sock in idle:
            sock.close()
        hub.stop()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("tls", "sent"),
    [
        pytest.param(False, b"", id="no-handshake"),
        pytest.param(True, b"", id="nothing"),
        pytest.param(True, b"GET /healthz HTTP/1.1\r\nHost: hub\r\n", id="half-a-head"),
        pytest.param(
            True,
            b"POST /api/v1/enroll HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{",
            id="half-a-body",
        ),
    ],
)
def test_a_connection_too_slow_to_send_its_request_is_closed(tmp_path, tls: bool, sent: bytes):
    hub = HubProcess(
        tmp_path / "hub",
        serve_args=["--header-timeout", "1", "--body-timeout", "1", "--handshake-timeout", "1"],
    ).start()
    try:
        with _connect(hub, tls, timeout=10) as sock:
            sock.sendall(sent)
            started = time.monotonic()
            assert _closed_by_hub(sock), "the hub closed it"
            assert time.monotonic() - started < 5
        _still_serving(hub)
    finally:
        hub.stop()


def test_a_flood_of_one_error_is_logged_once_per_interval_with_a_count():
    clock = Clock(0.0)
    limiter = RateLimitedLog(interval_s=10, clock=clock)
    records = []
    for _ in range(1000):
        record = logging.LogRecord("asyncio", logging.ERROR, "", 0, "accept failed\nmore", (), None)
        if limiter.filter(record):
            records.append(record.getMessage())
    clock.now = 11
    record = logging.LogRecord("asyncio", logging.ERROR, "", 0, "accept failed\nmore", (), None)
    assert limiter.filter(record)
    assert records == ["accept failed\nmore"]
    assert "999 more like it" in record.getMessage()


@contextmanager
def _served(app: Any) -> Iterator[str]:
    """`app` under uvicorn, with the hub's connection guard, in a thread."""
    port = free_port()
    config = uvicorn.Config(
        app,
        port=port,
        log_level="critical",
        http=protocol_class(ConnectionLimits(max_connections=64)),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30, what="uvicorn in a thread")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
