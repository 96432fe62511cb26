"""The ramdisk's side of provisioning: what a machine in `provisioning` is told to write
(the image, by sha256, and its first-boot seed), the image itself, and what its report does.

The seed's enrollment token is minted in the same write that hands it to the ramdisk, for
that machine's host name only and for one use; asking again revokes the previous one. The
hub keeps only the token's id, so the enrollment that spends it can be told apart from any
other: that enrollment moves the machine on (machines.agent_enrolled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils
import yaml
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from aiorch.errors import Conflict, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import enrollment, machines
from aiorch.metal.contract import (
    POWEROFF,
    REBOOT,
    Action,
    ActionResult,
    DeployParams,
    Inventory,
    SeedFile,
)
from aiorch.metal.image_record import (
    SEED_AGENT_CONFIG,
    SEED_AUTHORIZED_KEYS,
    SEED_ENROLL_TOKEN,
    SEED_HOSTNAME,
    choose_root_disk,
    find_image,
)
from aiorch.metal.lifecycle import Event, State

ACTOR = "hub"


def image_dir(ctx: HubContext) -> Path:
    if ctx.settings.metal_image_dir is None:
        raise InvalidInput("this hub has no root images (set AIORCH_METAL_IMAGE_DIR)")
    return ctx.settings.metal_image_dir


def ssh_key(ctx: HubContext) -> Path:
    if ctx.settings.metal_ssh_key is None:
        raise InvalidInput(
            "a provisioned machine needs the SSH key the hub's runs log in with: set "
            "AIORCH_METAL_SSH_KEY to a private key file (OpenSSH, no passphrase)"
        )
    return ctx.settings.metal_ssh_key


def authorized_keys(ctx: HubContext) -> str:
    """The public half of the hub's machine key: the new OS lets it in as root."""
    path = ssh_key(ctx)
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InvalidInput(f"cannot read AIORCH_METAL_SSH_KEY {path}: {exc.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"AIORCH_METAL_SSH_KEY {path} is no usable key: {exc}") from None
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{public.decode()} aiorch-hub\n"


def agent_config(hub_url: str, inventory: Inventory | None) -> str:
    """The agent.yaml the aiorch_edge_agent role would write: NVML where the ramdisk saw
    NVIDIA GPUs, none where it saw none."""
    backend = "nvml" if inventory is not None and inventory.gpus() else "none"
    return yaml.safe_dump({"hub_url": hub_url, "gpu_backend": backend}, sort_keys=True)


def deploy_action(
    ctx: HubContext, db: sqlite_utils.Database, machine: dict[str, Any], pin: str
) -> Action:
    """Inside the ramdisk's write: a fresh first-boot token (`pin`: the CA's, read before the
    write), and the deploy action carrying it."""
    name, image = machine["name"], json.loads(machine["image"])
    hub_url = ctx.settings.metal_hub_url
    assert hub_url is not None  # a ramdisk is only served when it is set
    if previous := image.get("enroll_token"):
        enrollment.revoke_token_in(db, ctx, previous, ACTOR)
    cls = machines.hardware_class(db, machine["hardware_class"])
    ttl = cls.timeouts.for_state(State.PROVISIONED) + cls.timeouts.for_state(State.PROVISIONING)
    token = enrollment.create_token_in(db, ctx, pin, image["site"], ttl, 1, ACTOR, host=name)
    image["enroll_token"] = token["id"]
    db.table("machines").update(name, {"image": machines.dumps(image)})
    known = Inventory.model_validate_json(machine["inventory"]) if machine["inventory"] else None
    seed = [
        SeedFile(path=SEED_HOSTNAME, content=f"{name}\n", mode="0644"),
        SeedFile(path=SEED_AGENT_CONFIG, content=agent_config(hub_url, known), mode="0644"),
        SeedFile(path=SEED_ENROLL_TOKEN, content=token["token"], mode="0600"),
        SeedFile(path=SEED_AUTHORIZED_KEYS, content=authorized_keys(ctx), mode="0600"),
    ]
    params = DeployParams(
        image_url=f"{hub_url}/api/v1/ramdisk/image",
        sha256=image["sha256"],
        root_disk=image["root_disk"],
        root_partition=image["root_partition"],
        seed=seed,
    )
    return Action(kind="deploy", params=params.model_dump())


def image_file(ctx: HubContext, machine: dict[str, Any]) -> Path:
    """The image this machine is being provisioned with (its own, and only while it is)."""
    if machine["state"] != State.PROVISIONING or not machine["image"]:
        raise Conflict(f"machine {machine['name']} is {machine['state']}, not provisioning")
    image = json.loads(machine["image"])
    path, manifest = find_image(image_dir(ctx), image["name"])
    if manifest.sha256 != image["sha256"]:
        raise Conflict(
            f"image {image['name']} changed since machine {machine['name']} was provisioned"
            f" with it (sha256 {image['sha256'][:12]}, now {manifest.sha256[:12]})"
        )
    return path


def deployed(ctx: HubContext, db: sqlite_utils.Database, name: str, body: ActionResult) -> Action:
    """The ramdisk wrote the image (reboot, to boot it from the disk) or could not (off)."""
    image = json.loads(machines.row(db, name)["image"])
    outcome = {**image, "deploy": {"ok": body.ok, "detail": body.detail, "measured": body.measured}}
    if body.ok:
        machines.transition(db, ctx, name, Event.DEPLOYED, "ramdisk", image=outcome,
                            boot_token=None, boot_token_hash=None)  # fmt: skip
        return REBOOT
    reason = f"deploy failed: {body.detail or 'the ramdisk gave no reason'}"
    machines.transition(db, ctx, name, Event.FAIL, "ramdisk", reason=reason, image=outcome)
    return POWEROFF


def provision_record(
    ctx: HubContext, machine: dict[str, Any], image: str, root_disk: str | None, site: str,
    actor: str,
) -> dict[str, Any]:  # fmt: skip
    """What `machines provision` stores: the image by name and sha256, and its root disk
    (checked against the inventory now, so a bad choice fails before anything boots)."""
    _, manifest = find_image(image_dir(ctx), image)
    authorized_keys(ctx)
    if not machine["inventory"]:
        raise Conflict(f"machine {machine['name']} has no inventory: inspect it first")
    disks = Inventory.model_validate_json(machine["inventory"]).disks
    disk = choose_root_disk(disks, manifest.raw_size_bytes, root_disk)
    return {
        "name": image, "sha256": manifest.sha256, "raw_size_bytes": manifest.raw_size_bytes,
        "root_partition": manifest.root_partition, "kernel": manifest.kernel_version,
        "root_disk": disk, "site": machines.check_name(site), "requested_by": actor,
    }  # fmt: skip
