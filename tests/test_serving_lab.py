"""Model serving end to end on a provisioned lab: the hub's deployments become containers that
answer on the edge hosts, and keep answering through everything an edge site goes through.

site.yml converges a fresh 3-host lab (agents enrolled and running); the lab payload image
goes to the hub's store; examples/deployments/lab-model.yaml, pinned to that archive, puts
one replica on each edge box (`role: edge-box`), serving `POST /predict` on port 18080. The
tests run in file order on that one deployment (serve, scale, hub outage with a crash, an
agent restart and a reboot, changes during a cut, delete); each but the last leaves it
serving on both edge boxes. Containers are read on the hosts themselves (`podman exec`,
which works during a cut), never only from the hub's view.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import time
from typing import Any

import httpx
import pytest
import yaml

from aiorch.deploy.rollout import ACTIVE
from aiorch.deploy.spec import load_spec, template_hash
from aiorch.lab import wait_until
from aiorch.lab.payload import (
    FILES,
    build_payload,
    deployment_spec,
    payload_digest,
    payload_ref,
)
from edge_agent.workloads.podman import MANAGED, TEMPLATE
from tests.fixtures_provision import ProvisionLab, assert_ok

pytestmark = pytest.mark.lab

NAME = "lab-model"
EDGES = ("edge1-1", "edge2-1")
PORT = 18080  # the example's hostPort
FEATURES = [1.0, 2.0, 3.0, 4.0]
# A busy 2-core machine: an image download and load (into the host's own podman), or a reboot,
# can take a while. 180 s was once not enough for a broken version's image to load, start and
# fail its health check under the full suite; the waits return as soon as their condition holds.
DEADLINE = 300.0


def _payload_server() -> Any:
    """The payload's own server module, for the score a prediction must have."""
    spec = importlib.util.spec_from_file_location("aiorch_lab_payload_server", FILES / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def converged(provision_lab: ProvisionLab) -> ProvisionLab:
    """site.yml on every host, and the lab's inventory in the hub so hosts have their roles.

    Agents back off for at most 10 s here: tests stop the hub and cut hosts, and waiting
    out the default 5-minute ceiling afterwards would only measure the wait."""
    result = provision_lab.run(
        "site.yml", extra={"aiorch_edge_agent_config_extra": {"max_backoff_s": 10}}
    )
    assert_ok(result)
    lab = provision_lab.lab
    body = {"filename": "lab.yml", "content": lab.inventory_path.read_text()}
    response = provision_lab.hub.admin.post("/inventory/import", json=body)
    assert response.status_code == 200, response.text
    return provision_lab


def push(lab: ProvisionLab, version: str) -> str:
    """The payload `version` pushed to the hub; returns its reference pinned to the archive."""
    archive = build_payload(version)
    ref = payload_ref(version)
    with archive.open("rb") as fh:
        response = lab.hub.admin.post(
            "/images",
            params={"ref": ref},
            headers={"Content-Type": "application/octet-stream"},
            content=iter(lambda: fh.read(1 << 20), b""),
            timeout=300,
        )
    assert response.status_code == 201, response.text
    assert response.json()["digest"] == payload_digest(archive)
    return f"{ref}@{response.json()['digest']}"


@pytest.fixture(scope="module")
def image(converged: ProvisionLab) -> str:
    return push(converged, "v1")


def spec_text(
    image: str, replicas: int = 2, note: str = "lab", wave_size: int | None = None
) -> str:
    """The example spec with the pushed image, `replicas` and MODEL_NOTE (which the server
    ignores: a template change that keeps the replicas healthy), and another wave size."""
    text = deployment_spec(image, replicas=replicas, env={"MODEL_NOTE": note})
    if wave_size is None:
        return text
    doc = yaml.safe_load(text)
    doc["spec"]["rollout"]["waveSize"] = wave_size
    return yaml.safe_dump(doc, sort_keys=False)


def rollout_status(lab: ProvisionLab) -> subprocess.CompletedProcess[str]:
    """`aiorch rollout status --wait`, as an operator would wait on a rollout."""
    argv = ("rollout", "status", NAME, "--wait", "--timeout", f"{DEADLINE:g}", "--output", "json")
    return lab.hub.cli(*argv, check=False, timeout=DEADLINE + 30)


def apply(lab: ProvisionLab, text: str) -> dict[str, Any]:
    response = lab.hub.admin.post("/deployments", json={"spec": text})
    assert response.status_code == 200, response.text
    return dict(response.json())


def containers(lab: ProvisionLab, host: str) -> list[dict[str, Any]]:
    """The agent's containers on `host`, running or not, as `podman ps` lists them."""
    out = lab.lab.exec(
        host, ["podman", "ps", "--all", "--filter", f"label={MANAGED}=true", "--format", "json"]
    ).stdout
    return list(json.loads(out or "[]"))


def container_env(lab: ProvisionLab, host: str, name: str) -> dict[str, str]:
    out = lab.lab.exec(host, ["podman", "inspect", "--format", "{{json .Config.Env}}", name])
    return dict(item.split("=", 1) for item in json.loads(out.stdout))


def predict(lab: ProvisionLab, host: str) -> dict[str, Any]:
    """POST /predict to `host`'s published port, from this machine."""
    url = f"http://{lab.lab.host(host).address}:{PORT}/predict"
    response = httpx.post(url, json={"features": FEATURES}, timeout=5)
    response.raise_for_status()
    return dict(response.json())


def answers(lab: ProvisionLab, host: str) -> dict[str, Any] | None:
    """predict(), or None while nothing answers there yet."""
    try:
        return predict(lab, host)
    except httpx.HTTPError:
        return None


def agent_ids(lab: ProvisionLab) -> dict[str, str]:
    return {h["name"]: h["agent_id"] for h in lab.hub.admin.get("/hosts").json()}


def serving(lab: ProvisionLab, text: str, hosts: tuple[str, ...]) -> list[dict[str, Any]]:
    """Wait until the hub shows one healthy, updated replica on each of `hosts` (and none
    elsewhere), no rollout under way (the last may have rolled back), their agents online,
    and each of them runs exactly one container, of this spec's template, while the other
    edge hosts run none. Returns the replicas."""
    template = template_hash(load_spec(text))

    def converged() -> list[dict[str, Any]] | None:
        shown = lab.hub.admin.get(f"/deployments/{NAME}").json()
        replicas = shown["replicas"]
        if sorted(r["host"] for r in replicas) != sorted(hosts):
            return None
        if any(r["state"] != "healthy" or not r["updated"] for r in replicas):
            return None
        if shown["rollout"] is not None and shown["rollout"]["state"] in ACTIVE:
            return None
        online = {h["name"] for h in lab.hub.admin.get("/hosts").json() if h["agent"] == "online"}
        if not online >= set(hosts):
            return None
        for host in EDGES:
            found = [(c["State"], c["Labels"].get(TEMPLATE)) for c in containers(lab, host)]
            if found != ([("running", template)] if host in hosts else []):
                return None
        return list(replicas)

    what = f"{NAME} healthy on {', '.join(hosts)} with template {template[:12]}"
    return wait_until(converged, timeout=DEADLINE, what=what, interval=1)


def journal(lab: ProvisionLab, host: str, since: float, *matches: str) -> str:
    """The agent's log messages on `host` since `since` (this machine's clock, which the lab
    hosts share), narrowed by journal field matches such as `_PID=123`."""
    argv = ["journalctl", "--output", "cat", "--no-pager", "--since", f"@{int(since)}"]
    return lab.lab.exec(host, [*argv, *(matches or ("--unit", "aiorch-agent"))]).stdout


def healthy_in_journal(lab: ProvisionLab, host: str, since: float, *matches: str) -> str | None:
    """journal(), once it has the agent judging a workload healthy."""
    text = journal(lab, host, since, *matches)
    return text if ": healthy" in text else None


def agent_pid(lab: ProvisionLab, host: str) -> str:
    argv = ["systemctl", "show", "--property=MainPID", "--value", "aiorch-agent"]
    return lab.lab.exec(host, argv).stdout.strip()


def synced_revision(lab: ProvisionLab, agent: str) -> int:
    """Wait until `agent` has checked in with its newest desired state; its revision."""

    def synced() -> int | None:
        row = lab.hub.admin.get(f"/agents/{agent}").json()
        return (
            row["applied_revision"] if row["applied_revision"] == row["desired_revision"] else None
        )

    return wait_until(synced, timeout=60, what=f"agent {agent} on its newest desired state")


def test_the_model_serves_on_every_edge_host(converged: ProvisionLab, image: str) -> None:
    text = spec_text(image)
    result = apply(converged, text)
    assert sorted(r["host"] for r in result["plan"]["placed"]) == list(EDGES)
    serving(converged, text, EDGES)
    expected = _payload_server().score(FEATURES)
    for host in EDGES:
        answer = predict(converged, host)
        assert answer["model"] == "v1"
        assert answer["score"] == pytest.approx(expected)
        (found,) = containers(converged, host)
        assert container_env(converged, host, found["Names"][0])["MODEL_NOTE"] == "lab"
    assert answers(converged, "dc1-1") is None  # the gpu-server is not selected


def test_scaling_starts_and_removes_containers(converged: ProvisionLab, image: str) -> None:
    one = apply(converged, spec_text(image, replicas=1))
    (gone,) = [r["replica"]["host"] for r in one["plan"]["removed"]]
    (stays,) = set(EDGES) - {gone}
    serving(converged, spec_text(image, replicas=1), (stays,))
    assert answers(converged, gone) is None
    # Three replicas want three hosts with port 18080 free; two edge boxes have it.
    three = apply(converged, spec_text(image, replicas=3))
    (unplaced,) = three["plan"]["unplaced"]
    assert "18080" in unplaced["reason"], unplaced
    serving(converged, spec_text(image, replicas=3), EDGES)
    apply(converged, spec_text(image))
    serving(converged, spec_text(image), EDGES)
    assert all(answers(converged, host) for host in EDGES)


def test_workloads_outlive_the_hub_an_agent_restart_and_a_reboot(
    converged: ProvisionLab, image: str
) -> None:
    lab = converged.lab
    restarted, rebooted = EDGES
    before = {host: containers(converged, host)[0] for host in EDGES}
    converged.hub.stop()
    try:
        assert all(predict(converged, host)["model"] == "v1" for host in EDGES)
        # A crashed model server is restarted within a round, though check-ins back off.
        since = time.time()
        lab.exec(restarted, ["podman", "kill", before[restarted]["Id"]])
        wait_until(
            lambda: "restarted aiorch-" in journal(converged, restarted, since),
            timeout=60,
            what=f"the agent on {restarted} restarting its crashed container",
        )
        wait_until(lambda: answers(converged, restarted), timeout=60, what="the restarted model")
        # Restarting the agent leaves its container running.
        (running,) = containers(converged, restarted)
        since = time.time()
        lab.exec(restarted, ["systemctl", "restart", "aiorch-agent"])
        pid = agent_pid(converged, restarted)
        wait_until(
            lambda: healthy_in_journal(converged, restarted, since, f"_PID={pid}"),
            timeout=60,
            what=f"the restarted agent on {restarted} judging its workload healthy",
        )
        (after,) = containers(converged, restarted)
        assert (after["Id"], after["StartedAt"]) == (running["Id"], running["StartedAt"])
        assert predict(converged, restarted)["model"] == "v1"
        # A reboot: the agent starts the workload again from its own state dir.
        since = time.time()
        lab.faults.restart(rebooted)
        log = wait_until(
            lambda: healthy_in_journal(converged, rebooted, since),
            timeout=DEADLINE,
            what=f"the agent on {rebooted} judging its workload healthy after the reboot",
        )
        assert "hub unreachable" in log, log
        assert predict(converged, rebooted)["model"] == "v1"
        (back,) = containers(converged, rebooted)
        assert back["Id"] == before[rebooted]["Id"], "the same container, started again"
    finally:
        converged.hub.start()
    serving(converged, spec_text(image), EDGES)


def test_a_cut_off_host_gets_only_the_newest_of_three_changes(
    converged: ProvisionLab, image: str
) -> None:
    lab = converged.lab
    connected, cut = EDGES
    agent = agent_ids(converged)[cut]
    revision = synced_revision(converged, agent)
    (old,) = containers(converged, cut)
    notes = ("a", "b", "c")
    lab.faults.cut(cut)
    try:
        for note in notes:
            # One wave for both replicas: every change is meant for the cut host at once.
            plan = apply(converged, spec_text(image, note=note, wave_size=2))["plan"]
            assert cut in {r["host"] for r in plan["kept"]}, plan  # offline is no reason to go
        newest = spec_text(image, note=notes[-1], wave_size=2)
        template = template_hash(load_spec(newest))
        wait_until(
            lambda: (
                [c["Labels"].get(TEMPLATE) for c in containers(converged, connected)] == [template]
            ),
            timeout=DEADLINE,
            what=f"{connected} running the newest template",
        )
        assert [c["Id"] for c in containers(converged, cut)] == [old["Id"]], "cut off: no news"
        healed_at = time.time()
    finally:
        lab.faults.heal(cut)
    serving(converged, newest, EDGES)
    (now,) = containers(converged, cut)
    assert container_env(converged, cut, now["Names"][0])["MODEL_NOTE"] == notes[-1]
    assert synced_revision(converged, agent) == revision + len(notes)
    log = journal(converged, cut, healed_at)
    # One jump over the intermediate revisions, and the container replaced once.
    assert f"desired state revision {revision} -> {revision + len(notes)}" in log, log
    assert log.count("desired state revision") == 1, log
    assert log.count("started container") == 1 and log.count("template changed") == 1, log
    assert predict(converged, cut)["model"] == "v1"


def test_a_new_version_rolls_out_one_host_at_a_time(converged: ProvisionLab, image: str) -> None:
    text = spec_text(image, note="rolling")
    before = {host: containers(converged, host)[0]["Id"] for host in EDGES}
    assert apply(converged, text)["changed"]
    waited = rollout_status(converged)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    rollout = json.loads(waited.stdout)["rollout"]
    assert (rollout["state"], rollout["waves"]) == ("succeeded", [[0], [1]])
    serving(converged, text, EDGES)
    assert all(containers(converged, host)[0]["Id"] != before[host] for host in EDGES)
    entries = converged.hub.admin.get("/audit", params={"limit": 20}).json()
    steps = [
        (e["action"], e["detail"]) for e in reversed(entries) if e["action"].startswith("rollout.")
    ]
    assert [action for action, _ in steps[-3:]] == [
        "rollout.start",
        "rollout.wave",
        "rollout.succeeded",
    ]
    assert all(predict(converged, host)["model"] == "v1" for host in EDGES)


def test_a_broken_version_is_rolled_back_on_its_own(converged: ProvisionLab, image: str) -> None:
    good = spec_text(image, note="rolling")  # what runs now
    broken = deployment_spec(push(converged, "v2-broken"), env={"MODEL_NOTE": "rolling"})
    before = {host: containers(converged, host)[0]["Id"] for host in EDGES}
    assert apply(converged, broken)["changed"]
    waited = rollout_status(converged)
    assert waited.returncode == 2, waited.stdout + waited.stderr
    status = json.loads(waited.stdout)
    rollout = status["rollout"]
    assert rollout["state"] == "rolled_back" and "is unhealthy" in rollout["reason"], rollout
    assert status["revision"] == rollout["from_revision"]
    serving(converged, good, EDGES)
    # The first wave's replica was replaced twice (broken, then back); the second never.
    hosts = {r["replica"]: r["host"] for r in status["replicas"]}
    assert containers(converged, hosts[0])[0]["Id"] != before[hosts[0]]
    assert containers(converged, hosts[1])[0]["Id"] == before[hosts[1]]
    assert all(predict(converged, host)["model"] == "v1" for host in EDGES)
    shown = converged.hub.admin.get(f"/deployments/{NAME}").json()
    assert shown["spec"]["spec"]["image"] == image


def autoscaled(image: str) -> str:
    """The spec that runs now (note "rolling", one replica), autoscaled on the payload's
    requests in flight: one replica per request, 1 to 2, after short delays."""
    doc = yaml.safe_load(spec_text(image, replicas=1, note="rolling"))
    doc["spec"]["autoscale"] = {
        "min": 1, "max": 2, "metric": "aiorch_model_requests_in_flight", "target": 1,
        "port": 8080, "upDelaySeconds": 2, "downDelaySeconds": 5,
    }  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False)


def held_predictions(lab: ProvisionLab, host: str, count: int) -> list[socket.socket]:
    """`count` predictions on `host` that the payload holds open (up to its 300 s bound);
    closing a socket ends its request."""
    body = json.dumps({"features": FEATURES, "hold_s": 300}).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
    held = []
    for _ in range(count):
        held.append(socket.create_connection((lab.lab.host(host).address, PORT), timeout=5))
        held[-1].sendall(head.encode() + body)
    return held


def replica_count(lab: ProvisionLab, count: int) -> list[str] | None:
    """The replicas' hosts once the hub has `count` of them."""
    shown = lab.hub.admin.get(f"/deployments/{NAME}").json()
    hosts = [r["host"] for r in shown["replicas"]]
    return hosts if len(hosts) == count and shown["autoscale"]["replicas"] == count else None


def test_load_scales_the_deployment_out_and_back(converged: ProvisionLab, image: str) -> None:
    text = autoscaled(image)
    (gone,) = [r["replica"]["host"] for r in apply(converged, text)["plan"]["removed"]]
    (busy,) = set(EDGES) - {gone}
    serving(converged, text, (busy,))
    held = held_predictions(converged, busy, 2)  # 2 in flight, target 1: 2 replicas
    try:
        wait_until(lambda: replica_count(converged, 2), timeout=DEADLINE, what="2 replicas")
        serving(converged, text, EDGES)  # held: the load stays, and so do both replicas
        assert answers(converged, gone) is not None
    finally:
        for connection in held:
            connection.close()
    # No load: back to one replica once both have said so for the down delay.
    (stays,) = wait_until(lambda: replica_count(converged, 1), timeout=DEADLINE, what="1 replica")
    serving(converged, text, (stays,))
    params = {"action": "deployment.autoscale", "limit": 10}
    entries = converged.hub.admin.get("/audit", params=params).json()
    steps = [(e["detail"]["from"], e["detail"]["to"]) for e in reversed(entries)]
    assert steps[-2:] == [(1, 2), (2, 1)], steps
    shown = converged.hub.admin.get(f"/deployments/{NAME}").json()["autoscale"]
    assert (shown["load"], shown["desired"], shown["complete"]) == (0, 1, True), shown
    # As it was before: two replicas, not autoscaled.
    apply(converged, spec_text(image, note="rolling"))
    serving(converged, spec_text(image, note="rolling"), EDGES)


def test_deleting_the_deployment_removes_its_containers(converged: ProvisionLab) -> None:
    response = converged.hub.admin.delete(f"/deployments/{NAME}")
    assert response.status_code == 204, response.text
    wait_until(
        lambda: all(containers(converged, host) == [] for host in EDGES),
        timeout=DEADLINE,
        what="every edge host without the deployment's containers",
        interval=1,
    )
    assert converged.hub.admin.get(f"/deployments/{NAME}").status_code == 404
    assert all(answers(converged, host) is None for host in EDGES)
