"""A real hub under uvicorn on 127.0.0.1, started as its own process, plus clients for it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiorch.lab.wait import wait_until

BIN = Path(sys.executable).parent
AIORCH = str(BIN / "aiorch")
AGENT = str(BIN / "aiorch-agent")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HubProcess:
    """`aiorch hub serve` in a subprocess: start, stop, kill -9 and start again on the same dir."""

    def __init__(self, data_dir: Path, poll_interval: float = 30.0) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.poll_interval = poll_interval
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}-hub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def start(self) -> HubProcess:
        argv = [AIORCH, "hub", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        argv += ["--poll-interval", str(self.poll_interval), "--log-level", "warning"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._healthy, timeout=30, what=f"hub on {self.url} (log: {self.log})")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"hub exited with {self.proc.returncode}: {self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `aiorch` CLI against this hub with the admin token."""
        env = {**os.environ, "AIORCH_HUB": self.url, "AIORCH_TOKEN": self.admin_token}
        result = subprocess.run(
            [AIORCH, *args], env=env, capture_output=True, text=True, timeout=120
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


def enroll_agent(hub: HubProcess, token: str, hostname: str) -> dict[str, Any]:
    """Enroll a protocol-level agent (no agent process) and return the hub's answer."""
    with hub.client() as client:
        response = client.post("/enroll", json={"token": token, "facts": {"hostname": hostname}})
    assert response.status_code == 201, response.text
    return dict(response.json())


def checkin_body(applied_revision: int = 0) -> dict[str, Any]:
    return {
        "agent_version": "test",
        "uptime_s": 1.0,
        "facts_hash": "abc",
        "applied_revision": applied_revision,
    }
