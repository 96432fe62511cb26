"""A real Prometheus (Debian's binary) scrapes a real hub with agents on the lab hosts, through
the contrib scrape config, and its query API answers each host's CPU utilization."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from aiorch.hub.process import HubProcess, free_port
from aiorch.lab import Lab
from aiorch.wait import wait_until
from tests import test_telemetry_faults as faults
from tests.tiers import missing_lab

pytestmark = [pytest.mark.lab, pytest.mark.e2e]  # the test starts a hub

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "prometheus"


lab_hub = faults.lab_hub  # a hub listening on `fault_lab`'s gateway, stopped after the test


@pytest.fixture(scope="module")
def fault_lab(lab: Lab) -> Lab:
    """The lab `lab_hub` listens on: here the session's shared one."""
    return lab


def _config(hub: HubProcess, target: str, token_file: Path) -> dict:
    """contrib's scrape config, pointed at this hub, its CA and a viewer token, every second."""
    config = yaml.safe_load((CONTRIB / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(CONTRIB / "aiorch-alerts.yml")]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [target]}]
        job["authorization"]["credentials_file"] = str(token_file)
        job["tls_config"]["ca_file"] = str(hub.ca_path)
    return config


@pytest.fixture
def prometheus(lab: Lab, lab_hub: HubProcess, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus") or missing_lab("prometheus (Debian package prometheus)")
    with faults._admin(lab_hub) as admin:
        token = admin.post("/tokens", json={"role": "viewer", "name": "prometheus"})
    assert token.status_code == 201, token.text
    token_file = tmp_path / "token"
    token_file.write_text(token.json()["token"])
    token_file.chmod(0o600)
    config = tmp_path / "prometheus.yml"
    target = f"{lab.gateway}:{lab_hub.port}"
    config.write_text(yaml.safe_dump(_config(lab_hub, target, token_file)))
    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={address}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://{address}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _query(client: httpx.Client, expr: str) -> list[dict]:
    try:
        answer = client.get("/api/v1/query", params={"query": expr})
    except httpx.TransportError:
        return []  # not listening yet
    return list(answer.json()["data"]["result"]) if answer.status_code == 200 else []


def test_prometheus_scrapes_each_lab_hosts_cpu_utilization_from_the_hub(
    lab: Lab, lab_hub: HubProcess, agent_lib: Path, prometheus: str
):
    agents = faults._agents(lab, lab_hub, agent_lib)
    hosts = {host.name for host in lab.hosts}
    try:
        with httpx.Client(base_url=prometheus, timeout=10) as client:

            def by_host(expr: str, label: str = "host") -> dict[str, float]:
                return {r["metric"][label]: float(r["value"][1]) for r in _query(client, expr)}

            wait_until(
                lambda: set(by_host("aiorch_host_cpu_utilization_percent")) == hosts,
                timeout=90,
                what="Prometheus to hold every lab host's CPU utilization",
            )
            cpu = by_host('aiorch_host_cpu_utilization_percent{job="aiorch"}')
            assert all(0 <= value <= 100 for value in cpu.values()), cpu
            assert by_host("aiorch_agent_online") == dict.fromkeys(hosts, 1.0)
            # The DCGM job keeps the hub's `instance`: NVIDIA's dashboard picks GPUs by host.
            wait_until(
                lambda: (
                    set(by_host('DCGM_FI_DEV_GPU_UTIL{job="aiorch-dcgm"}', "instance")) == hosts
                ),
                timeout=30,
                what="DCGM-named GPU series per lab host",
            )
            assert {r["metric"]["job"]: r["value"][1] for r in _query(client, "up")} == {
                "aiorch": "1",
                "aiorch-dcgm": "1",
            }
    finally:
        for agent in agents:
            agent.stop()
