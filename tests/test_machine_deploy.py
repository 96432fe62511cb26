"""Provisioning through the real hub, the CLI and a Redfish BMC emulator, with the ramdisk's
side played over the contract: `machines provision` PXE-boots the ramdisk, which is told to
write the image by sha256 with a first-boot seed, fetches that image (its own, with its boot
token), reports it written and is told to reboot; the machine then boots from its disk, and
the agent that enrolls with the seed's one-use token makes it a host that is configuring."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiorch.lab.bmc_emulators import SushyEmulator
from aiorch.metal.contract import Action, DeployParams
from aiorch.metal.image_record import SEED_AUTHORIZED_KEYS, SEED_ENROLL_TOKEN, SEED_HOSTNAME
from aiorch.wait import wait_until
from tests.fixtures_hub import enroll_request
from tests.fixtures_machines import boot_token, enroll, inventory, mac
from tests.fixtures_metal import MetalHub, machine_key

pytestmark = pytest.mark.e2e
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxiyTrfbVYW6bnFbkr1pYrRU2jVXJX3BUdnBcV2sJ+q"
H200 = {"address": "0000:00:05.0", "vendor": "0x10de", "device": "0x2335", "class": "0x030200"}


def write_image(directory: Path, name: str, raw_size: int, payload: bytes) -> str:
    data = gzip.compress(payload, mtime=0)
    (directory / f"{name}.img.gz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest = {"sha256": digest, "raw_size_bytes": raw_size, "root_partition": 1,
                "kernel_version": "6.1.0-simulated", "packages": {"udev": "252"}}  # fmt: skip
    (directory / f"{name}.json").write_text(json.dumps(manifest))
    return digest


@pytest.fixture(scope="module")
def deploy_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetalHub]:
    work = tmp_path_factory.mktemp("deploy")
    for sub in ("ramdisk", "images"):
        (work / sub).mkdir()
    (work / "ramdisk" / "vmlinuz").write_bytes(b"simulated kernel")
    (work / "ramdisk" / "initrd.gz").write_bytes(b"userland")
    write_image(work / "images", "debian12", 1 << 30, b"\xeb\x63" + bytes(4096))
    write_image(work / "images", "huge", 1 << 40, b"too big for any disk")
    hub = MetalHub(work / "hub", ramdisk_dir=work / "ramdisk", image_dir=work / "images",
                   ssh_key=machine_key(work / "ssh")).start()  # fmt: skip
    yield hub
    hub.stop()


def ready(hub: MetalHub, emulator: SushyEmulator, creds: Path, i: int, name: str) -> None:
    """Enrolled, inspected (the ramdisk's inventory: one 2 GiB disk), burnt in, accepted."""
    enroll(hub, emulator, creds, i, name)
    hub.cli("machines", "inspect", name)
    with hub.client(boot_token(hub, name)) as ramdisk:
        assert ramdisk.post("/ramdisk/inventory", json=inventory(i)).json()["kind"] == "burn_in"
        ramdisk.post("/ramdisk/result", json={"kind": "burn_in", "ok": True})
    assert hub.cli_json("machines", "accept", name)["state"] == "ready"


def seed_of(action: dict[str, Any]) -> dict[str, str]:
    params = DeployParams.model_validate(Action.model_validate(action).params)
    return {f.path: f.content for f in params.seed}


def token_status(hub: MetalHub, token_id: str) -> str:
    db = sqlite3.connect(hub.data_dir / "aiorch.db")
    (status,) = db.execute(
        "SELECT status FROM enrollment_tokens WHERE id = ?", [token_id]
    ).fetchone()
    return str(status)


def test_a_provisioned_machine_writes_its_image_boots_its_disk_and_becomes_a_host(
    deploy_hub: MetalHub, emulator: SushyEmulator, creds: Path
) -> None:
    ready(deploy_hub, emulator, creds, 1, "metal1")
    # The site's vars, before any of its hosts exists: the machine's host joins the group.
    site = deploy_hub.data_dir.parent / "site-vars.yml"
    site.write_text(
        "all:\n  children:\n    dc1:\n      vars: {aiorch_base_ntp_servers: [10.0.0.1]}\n"
    )
    deploy_hub.cli("inventory", "import", str(site))
    shown = deploy_hub.cli_json(
        "machines", "provision", "metal1", "--image", "debian12", "--site", "dc1"
    )
    assert shown["state"] == "provisioning" and shown["image"]["root_disk"] == "vda"
    uuid = emulator.systems[0].uuid
    wait_until(lambda: emulator.system(uuid)["PowerState"] == "On", timeout=60, what="power on")
    assert emulator.system(uuid)["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    token = boot_token(deploy_hub, "metal1")
    with_gpu = {**inventory(1), "pci": [H200]}  # seen now: the gate will expect it
    with deploy_hub.client(token) as ramdisk:
        first = ramdisk.post("/ramdisk/inventory", json=with_gpu).json()
        again = ramdisk.post("/ramdisk/inventory", json=with_gpu).json()
        params = first["params"]
        assert first["kind"] == "deploy" and params["root_disk"] == "vda"
        assert params["image_url"] == f"{deploy_hub.lab_url}/api/v1/ramdisk/image"
        seed = seed_of(again)
        assert seed[SEED_HOSTNAME] == "metal1\n"
        public = deploy_hub.ssh_key.with_suffix(".pub").read_text().split()[:2]
        assert seed[SEED_AUTHORIZED_KEYS].split()[:2] == public
        assert "gpu_backend: nvml" in seed["/etc/aiorch/agent.yaml"]
        # Asking twice revoked the first token: only the newest one enrolls.
        assert seed_of(first)[SEED_ENROLL_TOKEN] != seed[SEED_ENROLL_TOKEN]
        image = ramdisk.get("/ramdisk/image")
        assert image.status_code == 200
        assert hashlib.sha256(image.content).hexdigest() == params["sha256"]
        done = ramdisk.post("/ramdisk/result", json={
            "kind": "deploy", "ok": True, "detail": "wrote it",
            "measured": {"bytes_written": 4098, "seconds": 3, "sha256": params["sha256"]},
        })  # fmt: skip
        assert done.json()["kind"] == "reboot"
        assert ramdisk.get("/ramdisk/image").status_code == 401  # the step's token died
    provisioned = deploy_hub.show("metal1")
    assert provisioned["state"] == "provisioned"
    assert provisioned["image"]["deploy"]["ok"] is True
    first_token = provisioned["image"]["enroll_token"]
    assert token_status(deploy_hub, first_token) == "active"
    assert "exit\n" in deploy_hub.boot(f"/boot/{mac(1)}.ipxe").text  # boot from the disk
    _, stale = enroll_request(seed_of(first)[SEED_ENROLL_TOKEN], "metal1")
    with deploy_hub.client() as anonymous:
        assert anonymous.post("/enroll", json=stale).status_code == 401
    # The new OS's agent: its boot NIC has an address where no SSH answers (loopback).
    _, body = enroll_request(seed[SEED_ENROLL_TOKEN], "metal1")
    nic = {"name": "ens3", "mac": mac(1), "addresses": [
        {"family": "ipv6", "address": "fe80::1", "prefixlen": 64},
        {"family": "ipv4", "address": "127.0.0.9", "prefixlen": 8}]}  # fmt: skip
    body["facts"]["network_interfaces"] = [nic]
    body["facts"]["ssh_host_keys"] = [HOST_KEY]
    with deploy_hub.client() as anonymous:
        assert anonymous.post("/enroll", json=body).status_code == 201
    found = deploy_hub.cli_json("hosts", "show", "metal1")["vars"]
    assert {k: found[k] for k in ("ansible_host", "ansible_user", "ansible_ssh_private_key_file",
                                  "aiorch_edge_agent_hub_url", "aiorch_gpu_acceptance_expect_count")
            } == {"ansible_host": "127.0.0.9", "ansible_user": "root",
                  "ansible_ssh_private_key_file": str(deploy_hub.ssh_key),
                  "aiorch_edge_agent_hub_url": deploy_hub.lab_url,
                  "aiorch_gpu_acceptance_expect_count": 1}  # fmt: skip
    # The host key came with the enrollment: pinned, never trusted on first use.
    assert "StrictHostKeyChecking=yes" in found["ansible_ssh_common_args"]
    known = (deploy_hub.data_dir / "metal_known_hosts").read_text()
    assert known == f"127.0.0.9 {HOST_KEY}\n"
    exported = yaml.safe_load(deploy_hub.cli("inventory", "export").stdout)
    dc1 = exported["all"]["children"]["dc1"]
    assert dc1["vars"] == {"aiorch_base_ntp_servers": ["10.0.0.1"]} and "metal1" in dc1["hosts"]
    # site.yml runs on the new host through the normal run path; unreachable, it fails the step.
    wait_until(lambda: deploy_hub.show("metal1")["state"] != "configuring", timeout=120,
               what="the configure run ending")  # fmt: skip
    failed = deploy_hub.show("metal1")
    assert failed["state"] == "failed_configuring" and failed["host"] == "metal1"
    assert re.fullmatch(r"machine\.yml run r[0-9a-f]{12} failed", failed["reason"]), failed[
        "reason"
    ]
    moves = [e["event"] for e in failed["events"]]
    assert moves[-4:] == ["provision", "deployed", "agent_online", "fail"]
    # Retiring the machine's host goes on through release: the ramdisk wipes, then ready.
    deploy_hub.cli("hosts", "retire", "metal1", "--force", check=False)  # the run fails
    assert deploy_hub.cli_json("hosts", "show", "metal1")["status"] == "retired"
    wait_until(lambda: deploy_hub.show("metal1")["state"] == "releasing", timeout=60,
               what="the release pass")  # fmt: skip
    with deploy_hub.client(boot_token(deploy_hub, "metal1")) as ramdisk:
        wipe = ramdisk.post("/ramdisk/inventory", json=inventory(1)).json()
        assert wipe == {"kind": "wipe", "params": {"method": "metadata"}}
        disks = [{"name": "vda", "serial": "D1", "method": "metadata", "ok": True}]
        ramdisk.post("/ramdisk/result", json={"kind": "wipe", "ok": True, "disks": disks})
    released = deploy_hub.show("metal1")
    assert released["state"] == "ready"
    assert released["wipe"]["requested_by"] == "hub: its host was retired"


def test_a_deploy_the_ramdisk_could_not_write_fails_provisioning_with_its_words(
    deploy_hub: MetalHub, emulator: SushyEmulator, creds: Path
) -> None:
    ready(deploy_hub, emulator, creds, 2, "metal2")
    deploy_hub.cli("machines", "provision", "metal2", "--image", "debian12", "--root-disk", "vda")
    with deploy_hub.client(boot_token(deploy_hub, "metal2")) as ramdisk:
        assert ramdisk.post("/ramdisk/inventory", json=inventory(2)).json()["kind"] == "deploy"
        answer = ramdisk.post(
            "/ramdisk/result",
            json={"kind": "deploy", "ok": False, "detail": "the stream's sha256 is 00ab, not 1234"},
        )
        assert answer.json()["kind"] == "poweroff"
    failed = deploy_hub.show("metal2")
    assert failed["state"] == "failed_provisioning"
    assert failed["reason"] == "deploy failed: the stream's sha256 is 00ab, not 1234"


def test_bad_provisioning_requests_are_one_line_errors_that_change_nothing(
    deploy_hub: MetalHub, emulator: SushyEmulator, creds: Path
) -> None:
    ready(deploy_hub, emulator, creds, 3, "metal3")
    enroll(deploy_hub, emulator, creds, 4, "metal4")
    cases = [
        (("metal3", "--image", "nope"), "no image named nope"),
        (("metal3", "--image", "nope"), "there are: debian12, huge"),
        (("metal3", "--image", "../etc"), "invalid image name"),
        (("metal3", "--image", "huge"), "no disk of this machine holds the image"),
        (("metal3", "--image", "debian12", "--root-disk", "sdz"), "has no disk sdz"),
        (("metal4", "--image", "debian12"), "only a ready machine is provisioned"),
        (("ghost", "--image", "debian12"), "no machine named ghost"),
    ]
    for args, words in cases:
        result = deploy_hub.cli("machines", "provision", *args, check=False)
        assert result.returncode != 0, args
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert deploy_hub.show("metal3")["state"] == "ready"
    assert deploy_hub.show("metal4")["state"] == "enrolled"
