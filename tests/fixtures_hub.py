"""A real hub under uvicorn on 127.0.0.1, started as its own process, plus clients for it."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiorch.hub.context import HubContext
from aiorch.hub.process import BIN
from aiorch.hub.process import HubProcess as BaseHubProcess
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from edge_agent import identity

TEST_CLOCK_START = 1_800_000_000.0


@dataclass(frozen=True)
class AgentCert:
    """A protocol-level agent's key and certificate (one PEM file), as `enroll_agent` made them;
    `hub.client(cert)` talks mTLS with it."""

    path: Path
    agent_id: str


def tls_context(ca: Path, cert: AgentCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(cert.path)
    return context


AIORCH = str(BIN / "aiorch")
AGENT = str(BIN / "aiorch-agent")


class HubProcess(BaseHubProcess):
    """The hub process plus the clients tests use against it."""

    def client(self, token: str | AgentCert | None = None, root: bool = False) -> httpx.Client:
        """A client verifying the hub by its CA: with a bearer token, or as an agent (mTLS);
        on /api/v1, or on the hub's root (/healthz, /metrics) with `root`."""
        cert = token if isinstance(token, AgentCert) else None
        headers = {"Authorization": f"Bearer {token}"} if isinstance(token, str) else {}
        verify = tls_context(self.ca_path, cert)
        base = self.url if root else f"{self.url}/api/v1"
        return httpx.Client(base_url=base, headers=headers, timeout=30, verify=verify)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the `aiorch` CLI against this hub with the admin token."""
        env = {**os.environ, "AIORCH_HUB": self.url, "AIORCH_TOKEN": self.admin_token}
        env["AIORCH_CA"] = str(self.ca_path)
        result = subprocess.run(
            [AIORCH, *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"aiorch {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--output", "json").stdout)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("shared") / "hub").start()
    yield process
    process.stop()


@pytest.fixture
def admin(shared_hub: HubProcess) -> Iterator[httpx.Client]:
    with shared_hub.client(shared_hub.admin_token) as client:
        yield client


def make_token(admin_client: httpx.Client, role: str) -> str:
    response = admin_client.post("/tokens", json={"role": role, "name": f"test-{role}"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def make_enroll_token(admin_client: httpx.Client, site: str = "edge1", **extra: Any) -> str:
    response = admin_client.post("/enroll-tokens", json={"site": site, **extra})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def enroll_request(token: str, hostname: str) -> tuple[Any, dict[str, Any]]:
    """A fresh agent key and the enrollment body that asks a certificate for it."""
    key = identity.new_key()
    body = {"token": token, "csr": identity.csr_pem(key), "facts": {"hostname": hostname}}
    return key, body


def fresh_csr() -> str:
    """A CSR for a key made now, for service-level enrollment that needs no key afterwards:
    `enrollment.enroll(ctx, token, fresh_csr(), facts, "1")`."""
    return identity.csr_pem(identity.new_key())


def enroll_agent(hub: HubProcess, token: str, hostname: str) -> dict[str, Any]:
    """Enroll a protocol-level agent (no agent process) and return the hub's answer, with the
    agent's key and certificate as `credential` (an AgentCert for `hub.client`)."""
    key, body = enroll_request(token, hostname)
    with hub.client() as client:
        response = client.post("/enroll", json=body)
    assert response.status_code == 201, response.text
    answer = dict(response.json())
    where = Path(tempfile.mkdtemp(prefix=f"agent-{hostname}-", dir=hub.data_dir.parent))
    saved = identity.save(where / identity.IDENTITY_FILE, key, answer["certificate"])
    return {**answer, "credential": AgentCert(saved.path, answer["agent_id"])}


def checkin_body(applied_revision: int = 0) -> dict[str, Any]:
    return {
        "agent_version": "test",
        "uptime_s": 1.0,
        "facts_hash": "abc",
        "applied_revision": applied_revision,
    }


class Clock:
    """A clock the test moves by hand (`clock.now += 60`), for time-based hub logic."""

    def __init__(self, now: float = TEST_CLOCK_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_context(tmp_path: Path) -> Iterator[Callable[..., HubContext]]:
    """`make_context(**settings)`: an in-process hub context on a real SQLite file, with a
    hand-moved `Clock`, for service-level tests that need no HTTP."""
    made: list[HubContext] = []

    def make(**settings: Any) -> HubContext:
        config = HubSettings(data_dir=tmp_path, **settings)
        ctx = HubContext(store=Store(config.db_path).open(), settings=config, clock=Clock())
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.store.close()
