"""`make demo` provisions a lab through the hub over HTTPS (agents enrolled with the CA's pin,
then mTLS), ends with a model serving on its edge box, can run twice without harm, and
`--down` removes what it made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiorch.hub.process import BIN, free_port
from aiorch.lab import Lab
from edge_agent.identity import pinned
from tests.fixtures_lab import unique_lab_name
from tests.tiers import OWN_LABS_GROUP

# The demo starts its own hub; two demo runs of up to 1500 s each (see _demo) plus --down.
pytestmark = [
    pytest.mark.lab,
    pytest.mark.e2e,
    pytest.mark.timeout(3600),
    pytest.mark.xdist_group(OWN_LABS_GROUP),  # beside the lab tier: its own lab, its own cache
]


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiorch.demo", *args], capture_output=True, text=True, timeout=1500
    )


def _cli_json(data: Path, *args: str) -> Any:
    """`aiorch ARGS --output json` against the demo's hub (its data dir's admin token)."""
    env = {**os.environ, "AIORCH_DATA_DIR": str(data)}
    argv = [str(BIN / "aiorch"), *args, "--output", "json"]
    return json.loads(
        subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    )


def test_demo_twice_then_down(tmp_path: Path):
    name = unique_lab_name()
    data = tmp_path / "demo"
    args = ["--data-dir", str(data), "--lab-name", name, "--port", str(free_port())]
    first = _demo(*args, "--hosts", "2")
    try:
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        agents = _cli_json(data, "agents", "list")
        assert sorted(a["host_name"] for a in agents) == sorted(h.name for h in Lab(name).hosts)
        assert {a["status"] for a in agents} == {"online"}
        assert "aie_" not in first.stdout, "the enrollment token is masked in the walkthrough"
        # The walkthrough shows the pin of the hub's CA, the one in DATA_DIR/ca.pem.
        pin = re.search(r"hub CA pin: (sha256:[0-9a-f]{64})", first.stdout)
        assert pin, first.stdout[-3000:]
        pinned((data / "ca.pem").read_text(), pin[1])
        lab_hub = f"https://{Lab(name).gateway}:{args[-1]}"
        assert f"lab hosts reach it at {lab_hub}" in first.stdout
        # It says where the dashboard is and how to sign in, and the page is there.
        dashboard = f"https://127.0.0.1:{args[-1]}/ui/"
        assert f"Dashboard: {dashboard}" in first.stdout
        assert f"admin token in {data / 'admin.token'}" in first.stdout
        sign_in = httpx.get(dashboard, verify=str(data / "ca.pem"), follow_redirects=True)
        assert sign_in.status_code == 200 and 'name="token"' in sign_in.text
        # The walkthrough ends with the model answering on the (only) edge box.
        edge = Lab(name).host("edge1-1").address
        assert f"curl -s -X POST http://{edge}:18080/predict" in first.stdout
        answer = first.stdout.split(f"POST http://{edge}:18080/predict", 1)[1]
        assert '"model": "v1"' in answer.split("\n$ ", 1)[0], first.stdout[-3000:]
        # Provisioned from a signed bundle the hub imported; the replica uses its weights.
        assert "$ aiorch bundle create" in first.stdout and "$ aiorch bundle import" in first.stdout
        assert '"weights": [0.5, -0.25, 0.125, 1.0]' in answer.split("\n$ ", 1)[0]
        deployed = _cli_json(data, "deployments", "show", "lab-model")
        assert [(r["host"], r["state"]) for r in deployed["replicas"]] == [("edge1-1", "healthy")]
        # Beside it, a training job ran to its end on the datacenter host's simulated GPUs.
        job = _cli_json(data, "jobs", "show", "lab-train")
        assert (job["state"], job["exit_code"]) == ("succeeded", 0), job
        assert (job["attempt"]["host"], job["attempt"]["simulated_gpus"]) == ("dc1-1", 2), job
        assert "epoch 3 loss 0.333" in first.stdout, "the walkthrough follows the job's log"
        assert "aiorch jobs list" in first.stdout
        second = _demo(*args, "--hosts", "2")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
        assert "hub already running" in second.stdout
        assert "lab-model unchanged" in second.stdout
        assert "already imported" in second.stdout
        assert "job lab-train already succeeded" in second.stdout
        assert len(Lab(name).hosts) == 2
    finally:
        down = _demo(*args, "--down")
    assert down.returncode == 0, down.stderr
    assert not data.exists()
    assert Lab(name).hosts == []
