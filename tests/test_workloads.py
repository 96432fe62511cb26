"""Model-serving workloads on a real podman: the agent's reconciler starts, heals, replaces and
removes containers, judges their health, and gets its images from a real hub.

The image is the lab payload (`aiorch lab payload build`). Reconciler tests put its archive
in the agent's image cache, which is where a download lands; the agent tests fetch it from a
hub. Every container made here carries the test agent's owner label (or, for the one the
agent must leave alone, `io.aiorch.test`) and is removed by the fixtures, images too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from aiorch.hub.services.images import blob_path
from aiorch.lab.payload import build_payload, payload_digest, payload_ref
from aiorch.wait import wait_until
from edge_agent.agent import Agent, enroll
from edge_agent.config import AgentConfig
from edge_agent.contract.workload import parse_workload
from edge_agent.workloads import Podman, Reconciler
from edge_agent.workloads.container import run_argv
from edge_agent.workloads.podman import OWNER
from tests.fixtures_hub import HubProcess, enroll_agent, make_enroll_token
from tests.tiers import require_lab

lab = pytest.mark.lab  # real podman, as root

# This machine's podman needs runc and explicit limits (/work/shared/LAB-FACTS.md).
PODMAN_ARGS = ["--runtime", "/usr/sbin/runc"]
RUN_ARGS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=8192:8192"]
TEST_LABEL = "io.aiorch.test"
WID = "wltest/llm/0"


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *PODMAN_ARGS, *args], capture_output=True, text=True, timeout=120, check=check
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Payload:
    path: Path
    ref: str
    digest: str
    image_id: str  # what podman load makes of it
    size: int

    def image(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "size": self.size}


@pytest.fixture(scope="module")
def payloads() -> dict[str, Payload]:
    require_lab()
    made = {}
    for version in ("v1", "v2-broken"):
        path = build_payload(version)
        manifest = subprocess.run(
            ["tar", "-xOf", str(path), "manifest.json"], capture_output=True, check=True
        )
        image_id = json.loads(manifest.stdout)[0]["Config"].removesuffix(".json")
        digest, size = payload_digest(path), path.stat().st_size
        made[version] = Payload(path, payload_ref(version), digest, image_id, size)
    return made


def place(archive: Path, dest: Path) -> None:
    """A hard link where possible: archives are 230 MB, and nothing here writes into one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(archive, dest)
    except OSError:
        shutil.copy(archive, dest)


def _remove_images(payloads: dict[str, Payload]) -> None:
    """Images the agents loaded; one still used by someone else's container stays."""
    for payload in payloads.values():
        podman("rmi", payload.image_id, check=False)


def workload(payload: Payload, host_port: int, template: str = "t1", **extra: Any) -> dict:
    """A desired workload in the hub's format, serving the payload on `host_port`."""
    return {
        "id": WID,
        "project": "wltest",
        "deployment": "llm",
        "replica": 0,
        "template_hash": template,
        "image": payload.image(),
        "command": [],
        "args": [],
        "env": {"MODEL_NAME": "llm"},
        "secret_env": {"API_KEY": "s3cret-value"},
        "ports": [{"container_port": 8080, "host_port": host_port, "protocol": "TCP"}],
        "volumes": [],
        "gpus": [],
        "cpu": 1,
        "memory_mib": 256,
        "health_check": {
            "path": "/healthz",
            "port": 8080,
            "initial_delay_s": 0,
            "period_s": 0.5,
            "timeout_s": 2,
            "failure_threshold": 2,
        },
        **extra,
    }


def remove_owned(owner: str) -> None:
    ids = podman("ps", "-aq", "--filter", f"label={OWNER}={owner}").stdout.split()
    if ids:
        podman("rm", "--force", "--time", "0", *ids, check=False)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


MakeReconciler = Callable[..., Reconciler]


@pytest.fixture
def make_reconciler(tmp_path: Path, payloads: dict[str, Payload]) -> Iterator[MakeReconciler]:
    """`make()` -> a reconciler whose image cache already holds the payload archives."""
    made: list[Reconciler] = []

    def make() -> Reconciler:
        state = tmp_path / f"agent{len(made)}"
        for payload in payloads.values():
            place(payload.path, state / "images" / f"{payload.digest[7:]}.tar")
        reconciler = Reconciler(state, Podman(PODMAN_ARGS), RUN_ARGS, image_wait_s=60)
        made.append(reconciler)
        return reconciler

    yield make
    for reconciler in made:
        reconciler.close()
        remove_owned(reconciler.owner)
    _remove_images(payloads)


def converge(
    reconciler: Reconciler, document: dict, state: str, timeout: float = 60, **expect: Any
) -> dict:
    """Reconcile until the workload's report has `state` (and the `expect`ed fields)."""

    def done() -> dict | None:
        report = reconciler.reconcile(1, document)["workloads"].get(WID)
        wanted = {"state": state, **expect}
        return report if report and wanted.items() <= report.items() else None

    return wait_until(done, timeout=timeout, what=f"{WID} to be {state} {expect or ''}")


def inspect(name: str) -> dict:
    return dict(json.loads(podman("inspect", name).stdout)[0])


def predict(port: int) -> dict:
    response = httpx.post(
        f"http://127.0.0.1:{port}/predict", json={"features": [1, 0, 2, 0.5]}, timeout=5
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@lab
def test_desired_workload_starts_healthy_and_serves(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    reconciler, port = make_reconciler(), free_port()
    doc = {"workloads": [workload(payloads["v1"], port)]}
    report = converge(reconciler, doc, "healthy")
    assert report == {
        "state": "healthy",
        "reason": None,
        "template_hash": "t1",
        "restarts": 0,
        "container": "aiorch-wltest-llm-0",
    }
    answer = predict(port)
    assert answer["model"] == "v1" and 0 < answer["score"] < 1
    info = inspect("aiorch-wltest-llm-0")
    assert info["Image"] == payloads["v1"].image_id, "created from the verified image id"
    assert info["Config"]["Labels"]["io.aiorch.workload"] == WID
    assert {"MODEL_NAME=llm", "API_KEY=s3cret-value"} <= set(info["Config"]["Env"])
    assert "s3cret-value" not in " ".join(info["Config"]["CreateCommand"]), "secret in argv"
    assert reconciler.container_statuses() == [
        {"name": "aiorch-wltest-llm-0", "state": "running", "restarts": 0, "health": "healthy"}
    ]


@lab
def test_containers_without_the_agents_labels_are_never_touched(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    reconciler = make_reconciler()
    converge(reconciler, {"workloads": [workload(payloads["v1"], free_port())]}, "healthy")
    stranger = f"wltest-stranger-{uuid.uuid4().hex[:6]}"
    podman(
        "run", "-d", "--name", stranger, "--label", f"{TEST_LABEL}=workloads", *RUN_ARGS,
        payloads["v1"].image_id,
    )  # fmt: skip
    try:
        before = inspect(stranger)
        for document in ({"workloads": []}, {"workloads": []}, {}):
            assert reconciler.reconcile(2, document)["workloads"] == {}
        after = inspect(stranger)
        assert after["State"]["Status"] == "running"
        assert (after["Id"], after["State"]["StartedAt"]) == (
            before["Id"],
            before["State"]["StartedAt"],
        )
        assert podman("container", "exists", "aiorch-wltest-llm-0", check=False).returncode == 1
    finally:
        podman("rm", "--force", "--time", "0", stranger, check=False)


@lab
def test_killed_container_is_restarted_and_counted(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    reconciler, port = make_reconciler(), free_port()
    doc = {"workloads": [workload(payloads["v1"], port)]}
    converge(reconciler, doc, "healthy")
    first = inspect("aiorch-wltest-llm-0")["Id"]
    podman("kill", "--signal", "KILL", "aiorch-wltest-llm-0")
    report = converge(reconciler, doc, "healthy", restarts=1)
    assert inspect("aiorch-wltest-llm-0")["Id"] == first, "restarted, not replaced"
    assert report["template_hash"] == "t1"
    assert predict(port)["model"] == "v1"


@lab
def test_template_change_replaces_the_container(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    reconciler, port = make_reconciler(), free_port()
    converge(reconciler, {"workloads": [workload(payloads["v1"], port)]}, "healthy")
    old = inspect("aiorch-wltest-llm-0")["Id"]
    changed = workload(payloads["v1"], port, template="t2", env={"MODEL_NAME": "llm-2"})
    converge(reconciler, {"workloads": [changed]}, "healthy", template_hash="t2")
    new = inspect("aiorch-wltest-llm-0")
    assert new["Id"] != old and new["Config"]["Labels"]["io.aiorch.template"] == "t2"
    assert "MODEL_NAME=llm-2" in new["Config"]["Env"]
    assert podman("container", "exists", old, check=False).returncode == 1


@lab
def test_workload_dropped_from_desired_state_is_removed(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    reconciler = make_reconciler()
    converge(reconciler, {"workloads": [workload(payloads["v1"], free_port())]}, "healthy")
    assert reconciler.reconcile(2, {"workloads": []}) == {"revision": 2, "workloads": {}}
    assert podman("container", "exists", "aiorch-wltest-llm-0", check=False).returncode == 1
    assert reconciler.container_statuses() == []


@lab
def test_broken_version_is_unhealthy_with_a_reason(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    reconciler, port = make_reconciler(), free_port()
    report = converge(
        reconciler, {"workloads": [workload(payloads["v2-broken"], port)]}, "unhealthy"
    )
    assert "GET /healthz" in report["reason"] and "HTTP 500" in report["reason"]
    assert predict(port)["model"] == "v2-broken", "broken health, working model"


@lab
def test_crash_looping_container_fails_with_its_last_words(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    reconciler = make_reconciler()
    clock = Clock()
    reconciler.restarts.clock = clock  # the backoff (5 s, 10 s, 20 s, ...) on a fast clock
    crashing = workload(
        payloads["v1"],
        free_port(),
        command=["python3", "-c", "import sys; sys.exit('no model file')"],
        health_check=None,
    )

    def crash_loop() -> dict | None:
        clock.now += 5
        report = reconciler.reconcile(1, {"workloads": [crashing]})["workloads"][WID]
        return report if report["state"] == "failed" else None

    report = wait_until(crash_loop, timeout=60, what="a crash loop")
    assert "exits repeatedly" in report["reason"] and "exited with code 1" in report["reason"]
    assert "last log line: no model file" in report["reason"]
    assert report["restarts"] >= 5 and report["container"] == "aiorch-wltest-llm-0"


@lab
def test_invalid_workload_fails_with_a_reason_and_runs_nothing(
    make_reconciler: MakeReconciler, payloads: dict[str, Payload]
):
    entry = workload(payloads["v1"], free_port(), volumes=[{"host_path": "rel:ative"}])
    report = make_reconciler().reconcile(1, {"workloads": [entry]})["workloads"][WID]
    assert report["state"] == "failed" and "volumes.host_path" in report["reason"]
    assert podman("container", "exists", "aiorch-wltest-llm-0", check=False).returncode == 1


def test_run_arguments_carry_labels_limits_gpus_and_no_secrets():
    entry = {
        **workload(Payload(Path("m.tar"), "m:v1", "sha256:" + "0" * 64, "id", 1), 18080),
        "volumes": [{"host_path": "/srv/models", "mount_path": "/models", "read_only": True}],
        "gpus": [0, 3],
        "cpu": 2.5,
        "memory_mib": 2048,
        "command": ["python3", "-m", "serve"],
        "args": ["--port", "8080"],
    }
    argv = run_argv(parse_workload(entry), "IMAGEID", "/var/lib/a", ["--ulimit", "x"], None)
    text = " ".join(argv)
    assert "--label io.aiorch.managed=true --label io.aiorch.owner=/var/lib/a" in text
    assert "--label io.aiorch.workload=wltest/llm/0 --label io.aiorch.template=t1" in text
    assert "--publish 18080:8080/tcp --volume /srv/models:/models:ro" in text
    assert "--device nvidia.com/gpu=0 --device nvidia.com/gpu=3" in text
    assert "--cpus 2.5 --memory 2048m" in text and "--ulimit x" in text
    assert argv[argv.index("--entrypoint") + 1] == '["python3", "-m", "serve"]'
    assert argv[-3:] == ["IMAGEID", "--port", "8080"]
    assert "s3cret-value" not in text


# The agent with a real hub: images downloaded with its credential, reports in check-ins.


@dataclass
class HubAgent:
    hub: HubProcess
    agent: Agent
    state_dir: Path

    def desire(self, *workloads: dict) -> None:
        # A hand-written desired state carries no secrets: those come only from deployments.
        entries = [{**w, "secret_env": {}} for w in workloads]
        with self.hub.client(self.hub.admin_token) as admin:
            response = admin.put(
                f"/agents/{self.agent.agent_id}/desired", json={"document": {"workloads": entries}}
            )
        assert response.status_code == 200, response.text

    def until(self, state: str, timeout: float = 60, **expect: Any) -> dict:
        def done() -> dict | None:
            self.agent.cycle()  # absorbs an unreachable hub, as run_forever does
            report = (self.agent.report or {}).get("workloads", {}).get(WID)
            wanted = {"state": state, **expect}
            return report if report and wanted.items() <= report.items() else None

        return wait_until(done, timeout=timeout, what=f"{WID} to be {state} {expect or ''}")


def hub_blob(hub: HubProcess, digest: str) -> Path:
    """Where the hub's image store keeps an archive, as an image push leaves it."""
    ctx = SimpleNamespace(settings=SimpleNamespace(data_dir=hub.data_dir))
    return blob_path(ctx, digest)  # type: ignore[arg-type]


@pytest.fixture
def hub_agent(hub: HubProcess, tmp_path: Path, payloads: dict[str, Payload]) -> Iterator[HubAgent]:
    """An enrolled agent of `hub`, with the payload archives in the hub's image store."""
    for payload in payloads.values():
        place(payload.path, hub_blob(hub, payload.digest))
    config = AgentConfig(
        hub_url=hub.url,
        state_dir=tmp_path / "agent",
        gpu_backend="none",
        request_timeout_s=5,
        podman_args=PODMAN_ARGS,
        podman_run_args=RUN_ARGS,
    )
    with hub.client(hub.admin_token) as admin:
        enroll(config, hub.url, make_enroll_token(admin, "edge1"))
    agent = Agent(config)
    yield HubAgent(hub, agent, config.state_dir)
    agent.close()
    remove_owned(agent.workloads.owner)
    _remove_images(payloads)


@lab
def test_agent_fetches_the_image_from_the_hub_and_reports(
    hub_agent: HubAgent, payloads: dict[str, Payload]
):
    port = free_port()
    hub_agent.desire(workload(payloads["v1"], port))
    report = hub_agent.until("healthy")
    assert report["container"] == "aiorch-wltest-llm-0" and predict(port)["model"] == "v1"
    cached = hub_agent.state_dir / "images" / f"{payloads['v1'].digest[7:]}.tar"
    assert payload_digest(cached) == payloads["v1"].digest
    assert hub_agent.agent.report is not None and hub_agent.agent.report["revision"] == 1
    hub_agent.agent.round()  # the report travels with this check-in; the hub takes it


@lab
def test_hub_away_keeps_workloads_running_and_restarts_crashed_ones(
    hub_agent: HubAgent, payloads: dict[str, Payload]
):
    port = free_port()
    hub_agent.desire(workload(payloads["v1"], port))
    hub_agent.until("healthy")
    started = inspect("aiorch-wltest-llm-0")["State"]["StartedAt"]
    hub_agent.hub.stop()
    hub_agent.agent.cycle()
    assert inspect("aiorch-wltest-llm-0")["State"]["StartedAt"] == started, "left running"
    podman("kill", "--signal", "KILL", "aiorch-wltest-llm-0")
    hub_agent.until("healthy", restarts=1)
    assert predict(port)["model"] == "v1"


@lab
def test_refused_check_in_keeps_workloads_running_and_restarts_crashed_ones(
    hub_agent: HubAgent, payloads: dict[str, Payload], caplog: pytest.LogCaptureFixture
):
    port = free_port()
    hub_agent.desire(workload(payloads["v1"], port))
    hub_agent.until("healthy")
    started = inspect("aiorch-wltest-llm-0")["State"]["StartedAt"]
    host = socket.gethostname()
    with hub_agent.hub.client(hub_agent.hub.admin_token) as admin:  # revokes this agent
        enroll_agent(hub_agent.hub, make_enroll_token(admin, host=host, replace=True), host)
    with caplog.at_level(logging.ERROR, "aiorch.agent"):
        hub_agent.agent.cycle()
        assert inspect("aiorch-wltest-llm-0")["State"]["StartedAt"] == started, "left running"
        podman("kill", "--signal", "KILL", "aiorch-wltest-llm-0")
        hub_agent.until("healthy", restarts=1)  # cycles on, refused, without raising
    assert predict(port)["model"] == "v1"
    refused = [r.getMessage() for r in caplog.records if "credential refused" in r.getMessage()]
    assert len(refused) == 1 and "aiorch-agent enroll" in refused[0]


@lab
def test_corrupt_image_download_fails_and_loads_nothing(
    hub_agent: HubAgent, payloads: dict[str, Payload]
):
    payload = payloads["v1"]
    blob = hub_blob(hub_agent.hub, payload.digest)
    blob.unlink()  # a copy of its own: the payload archive itself stays intact
    shutil.copy(payload.path, blob)
    with blob.open("r+b") as fh:  # one flipped byte deep inside a layer
        fh.seek(blob.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    loaded_before = podman("image", "exists", payload.image_id, check=False).returncode == 0
    hub_agent.desire(workload(payload, free_port()))
    report = hub_agent.until("failed")
    assert "sha256" in report["reason"] and payload.digest[:19] in report["reason"]
    assert report["container"] is None
    assert list((hub_agent.state_dir / "images").iterdir()) == [], "no archive, no leftovers"
    assert podman("container", "exists", "aiorch-wltest-llm-0", check=False).returncode == 1
    if not loaded_before:  # (someone else may hold the same image)
        assert podman("image", "exists", payload.image_id, check=False).returncode == 1
