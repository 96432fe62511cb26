"""A hub inside the air gap: installed from the bundle alone, it provisions a lab host and
serves a model there, and nothing on that path reaches beyond the lab network.

The bundle is made on this (connected) machine and copied into one lab host on the lab's
network, which routes nowhere (aiorch/lab/firewall.py). There, with nothing but Debian's
python3, `unpack.py` lays out the hub's install and the signed apt repository, and
`install-hub.sh` installs the hub (apt only from the bundle's file: repository, pip with
--no-index). That hub verifies and imports the bundle, provisions the second lab host, and
serves it the bundle's model image and weights; the replica answers with those weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from aiorch.lab import Lab
from aiorch.lab import inventory as lab_inventory
from aiorch.lab.layout import container_name
from aiorch.lab.payload import build_payload, deployment_spec, payload_ref
from aiorch.lab.podman import podman
from aiorch.lab.site import prepare_disks, site_vars
from aiorch.wait import wait_until
from tests.fixtures_lab import LabFactory
from tests.tiers import OWN_LABS_GROUP

pytestmark = [
    pytest.mark.lab,
    pytest.mark.xdist_group(OWN_LABS_GROUP),  # beside the lab tier: its own labs, its own cache
    pytest.mark.timeout(2400),  # 690 s alone; beside the lab tier it shares two cores
]

PROJECT = Path(__file__).resolve().parents[1]
AIORCH = str(Path(sys.executable).parent / "aiorch")
PORT = 8443
DATA = "/var/lib/aiorch-hub"
BUNDLE = "/root/bundle"
SITE = "/root/site"
HUB_CLI = f"AIORCH_DATA_DIR={DATA} /opt/aiorch/venv/bin/aiorch"
# Tried by connecting (a name resolving proves nothing): registries, a public resolver.
OUTSIDE = (("deb.debian.org", 80), ("pypi.org", 443), ("1.1.1.1", 53))
WEIGHTS = {"weights": [2.0, 0.0, -1.0, 0.5], "bias": -0.25}
FEATURES = '{"features": [1, 2, 3, 4]}'


def sh(lab: Lab, host: str, script: str, timeout: float = 600) -> str:
    """Run a shell script on a lab host (podman exec); its output, or a failure showing it."""
    proc = lab.exec(host, ["bash", "-euo", "pipefail", "-c", script], check=False, timeout=timeout)
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def reaches(lab: Lab, host: str, address: str, port: int) -> bool:
    """Whether `host` can open a TCP connection to address:port (5 s)."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=5).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return lab.exec(host, ["python3", "-c", probe], check=False, timeout=30).returncode == 0


def put(lab: Lab, host: str, path: str, text: str) -> None:
    lab.exec(host, ["sh", "-c", f"umask 077; cat > {path}"], input=text.encode())


def make_bundle(tmp_path: Path) -> Path:
    """On the connected side: a key, the lab's model image and weights, one signed bundle
    with the hub's own install in it (the default)."""
    subprocess.run([AIORCH, "bundle", "keygen", "--out", str(tmp_path / "key")], check=True)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "weights.json").write_text(json.dumps(WEIGHTS))
    bundle = tmp_path / "bundle"
    create = [AIORCH, "bundle", "create", "--out", str(bundle),
              "--key", str(tmp_path / "key" / "bundle.key"),
              "--repo-cache", str(PROJECT / ".data" / "bundle-cache"),
              "--image", f"{payload_ref('v1')}={build_payload('v1')}",
              "--model", f"lab-weights={weights}"]  # fmt: skip
    subprocess.run(create, check=True, timeout=1800, cwd=PROJECT)
    return bundle


def test_a_hub_installed_from_the_bundle_alone_provisions_a_host_and_serves_a_model(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(hosts=2)
    prepare_disks(lab)
    hub_host, target = lab.hosts[0], lab.hosts[1]
    box = container_name(lab.name, hub_host.name)
    bundle = make_bundle(tmp_path)
    for address, port in OUTSIDE:
        assert not reaches(lab, hub_host.name, address, port), f"{address}:{port} answered"
    podman("cp", str(bundle), f"{box}:{BUNDLE}")
    podman("cp", str(tmp_path / "key" / "bundle.pub"), f"{box}:/root/bundle.pub")

    # The hub, from the bundle alone, on a host with Debian's python3 and nothing else.
    sh(lab, hub_host.name, f"python3 {BUNDLE}/unpack.py {SITE} hub/ repo/debs/")
    sh(lab, hub_host.name, f"bash {SITE}/hub/install-hub.sh", timeout=1200)
    sh(lab, hub_host.name, f"{HUB_CLI} bundle verify {BUNDLE} --trust /root/bundle.pub")
    sh(lab, hub_host.name,
       f"install -d -m 0700 {DATA} && systemd-run --unit aiorch-hub "
       f"/opt/aiorch/venv/bin/aiorch hub serve --data-dir {DATA} "
       f"--listen {hub_host.address}:{PORT} --listen 127.0.0.1:{PORT}")  # fmt: skip

    def hub_up() -> bool:
        done = lab.exec(hub_host.name, ["sh", "-c", f"{HUB_CLI} status"], check=False)
        return done.returncode == 0

    wait_until(hub_up, timeout=180, what="the air-gapped hub answering")
    sh(lab, hub_host.name, f"{HUB_CLI} bundle trust add /root/bundle.pub")
    sh(lab, hub_host.name, f"{HUB_CLI} bundle import {BUNDLE}", timeout=900)

    # It provisions the second host: apt from the bundle's signed repository through the hub.
    hub_url = f"https://{hub_host.address}:{PORT}"
    podman("cp", str(lab.ssh_key_path), f"{box}:/root/.ssh/lab_key")
    podman("cp", str(lab.known_hosts_path), f"{box}:/root/.ssh/lab_known_hosts")
    inventory = lab_inventory.render(
        lab.name, [target], Path("/root/.ssh/lab_key"), Path("/root/.ssh/lab_known_hosts")
    )
    entry = inventory["all"]["children"][target.site]["hosts"][target.name]
    entry.update(site_vars(lab, target.index, repo_url=f"{hub_url}/repo", hub_url=hub_url))
    put(lab, hub_host.name, "/root/inventory.yml", yaml.safe_dump(inventory, sort_keys=False))
    sh(lab, hub_host.name, "chmod 600 /root/.ssh/lab_key")
    sh(lab, hub_host.name, f"{HUB_CLI} inventory import /root/inventory.yml")
    made = sh(lab, hub_host.name,
              f"{HUB_CLI} enroll-token create --site {target.site} --output json")  # fmt: skip
    token = json.loads(made)["token"]
    put(lab, hub_host.name, "/root/enroll.json",
        json.dumps({"aiorch_edge_agent_enroll_token": token}))  # fmt: skip
    sh(
        lab,
        hub_host.name,
        f"{HUB_CLI} provision site.yml --limit {target.name} -e @/root/enroll.json",
        timeout=1500,
    )
    release = json.loads(sh(lab, target.name, "cat /etc/aiorch/site-release.json"))
    imported = json.loads(sh(lab, hub_host.name, f"{HUB_CLI} bundle list --output json"))
    assert release["digest"] == imported[0]["digest"]

    # A model to it: the image and the weights both came in the bundle.
    images = json.loads(sh(lab, hub_host.name, f"{HUB_CLI} image list --output json"))
    image = next(i for i in images if i["ref"].split("/")[-1] == payload_ref("v1").split("/")[-1])
    models = json.loads(sh(lab, hub_host.name, f"{HUB_CLI} model list --output json"))
    model = next(m for m in models if m["name"] == "lab-weights")
    spec = deployment_spec(
        f"{image['ref']}@{image['digest']}", replicas=1, model=("lab-weights", model["digest"])
    )
    put(lab, hub_host.name, "/root/model.yaml", spec)
    sh(lab, hub_host.name, f"{HUB_CLI} apply -f /root/model.yaml")
    name = yaml.safe_load(spec)["metadata"]["name"]
    sh(lab, hub_host.name, f"{HUB_CLI} rollout status {name} --wait --timeout 900", timeout=960)
    port = yaml.safe_load(spec)["spec"]["ports"][0]["hostPort"]
    answer = httpx.post(f"http://{target.address}:{port}/predict", content=FEATURES, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["weights"] == WEIGHTS["weights"]
    # And still nothing beyond the lab network, from either host.
    for host in (hub_host, target):
        for address, port_ in OUTSIDE:
            assert not reaches(lab, host.name, address, port_), f"{host.name} -> {address}"
