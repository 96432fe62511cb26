"""Every example under examples/metal/ is what contract.py says the ramdisk and the hub
exchange: inventories, each kind of action with its params, and each kind of result. The
lab VM's inventory and results there are the ones a real ramdisk run posted."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from aiorch.metal.contract import (
    Action,
    ActionKind,
    ActionResult,
    BurnInParams,
    DeployParams,
    Inventory,
    WipeParams,
)
from aiorch.metal.profile import HardwareClass, verdict

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "metal"
INIT = Path(__file__).resolve().parents[1] / "aiorch" / "metal" / "ramdisk_init.sh"
KINDS = set(typing.get_args(ActionKind))
PARAMS: dict[str, type[BaseModel]] = {
    "burn_in": BurnInParams,
    "wipe": WipeParams,
    "deploy": DeployParams,
}
ALL = sorted(EXAMPLES.glob("*.json"))
DEPLOY = json.loads((EXAMPLES / "action-deploy.json").read_text())["params"]


def load(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_each_example_validates_against_its_model(path: Path) -> None:
    kind, _, _ = path.stem.partition("-")
    data = load(path)
    if kind == "inventory":
        Inventory.model_validate(data)
    elif kind == "action":
        action = Action.model_validate(data)
        assert path.stem.startswith(f"action-{action.kind}")
        if action.kind in PARAMS:
            PARAMS[action.kind].model_validate(action.params)
        elif action.kind == "wait":
            assert isinstance(action.params["seconds"], int)
    elif kind == "result":
        result = ActionResult.model_validate(data)
        assert path.stem.startswith(f"result-{result.kind}")
    else:
        pytest.fail(f"{path.name}: name it inventory-*, action-* or result-*")


def test_every_kind_has_an_action_example_and_the_init_script_handles_it() -> None:
    actions = {Action.model_validate(load(p)).kind for p in EXAMPLES.glob("action-*.json")}
    assert actions == KINDS
    init = INIT.read_text()
    for kind in KINDS:
        assert f"\t{kind})" in init, f"ramdisk_init.sh has no case for {kind}"


def test_the_gpu_server_shows_its_gpus_and_the_lab_vm_none() -> None:
    server = Inventory.model_validate(load(EXAMPLES / "inventory-gpu-server.json"))
    assert len(server.gpus()) == 8 and all(g.device == "0x2335" for g in server.gpus())
    lab = Inventory.model_validate(load(EXAMPLES / "inventory-lab-vm.json"))
    assert lab.gpus() == []  # QEMU's VGA (0x1234) is a display, not an NVIDIA part
    assert lab.system.uuid is None and lab.system.serial == "SER-vm1"


def test_the_lab_vm_passes_the_default_class_and_fails_a_gpu_class() -> None:
    lab = Inventory.model_validate(load(EXAMPLES / "inventory-lab-vm.json"))
    burn_in = ActionResult.model_validate(load(EXAMPLES / "result-burn_in.json"))
    assert verdict(HardwareClass(), lab, burn_in) == []
    gpu_class = HardwareClass.model_validate({"burn_in": {"expect_gpus": 8, "min_cpus": 64}})
    assert verdict(gpu_class, lab, burn_in) == [
        "cpus: 1, want at least 64",
        "gpus: 0 found, want 8",
    ]


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (Inventory, {**load(EXAMPLES / "inventory-lab-vm.json"), "boot_mac": "52-54-00"}),
        (Inventory, {**load(EXAMPLES / "inventory-lab-vm.json"), "cpus": 0}),
        (Action, {"kind": "format_everything"}),
        (WipeParams, {"method": "shred"}),
        (DeployParams, {**load(EXAMPLES / "action-deploy.json")["params"], "sha256": "abc"}),
        (DeployParams, {**DEPLOY, "seed": [{"path": "/etc/../../x", "content": ""}]}),
        (DeployParams, {**DEPLOY, "root_disk": "/dev/x"}),
        (ActionResult, {"kind": "wipe"}),
    ],
)
def test_what_breaks_the_contract_is_refused(model: type[BaseModel], data: Any) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)
