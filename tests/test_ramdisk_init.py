"""The ramdisk's init script, its inventory and results run here under a POSIX sh against a
made-up sysfs (a GPU server's: NVMe, SATA, InfiniBand, NVIDIA GPUs): what it posts is what
contract.py accepts. The booted ramdisk is tested in test_ramdisk_lab.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aiorch.metal.contract import ActionResult, DeployParams, Inventory

INIT = Path(__file__).resolve().parents[1] / "aiorch" / "metal" / "ramdisk_init.sh"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "metal"
MAC = "b8:3f:d2:10:20:30"
IB_ADDRESS = "00:00:10:29:fe:80:00:00:00:00:00:00:a0:88:c2:03:00:11:22:33"
CPU = "processor\t: {}\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n\n"
pytestmark = pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq (apt-get install jq)")


def put(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_machine(root: Path) -> tuple[Path, Path]:
    sys, proc = root / "sys", root / "proc"
    dmi = "class/dmi/id/"
    for name, value in (("sys_vendor", "Supermicro"), ("product_name", "SYS-821GE-TNHR"),
                        ("product_serial", "S5432100"), ("product_uuid", "")):  # fmt: skip
        put(sys, dmi + name, value + "\n")
    put(sys, "block/nvme0n1/size", "7501476528\n")
    put(sys, "block/nvme0n1/device/serial", "  S6EWNA0T100001  \n")
    put(sys, "block/nvme0n1/device/model", "SAMSUNG MZQL23T8HCLS-00A07  \n")
    put(sys, "block/nvme0n1/queue/rotational", "0\n")
    put(sys, "block/sda/size", "1953525168\n")
    (sys / "block/sda/device").mkdir(parents=True)
    (sys / "block/sda/device/vpd_pg80").write_bytes(b"\x00\x80\x00\x0cWD-WX12345678")
    put(sys, "block/sda/queue/rotational", "1\n")
    put(sys, "block/loop0/size", "0\n")  # no device/: not a disk
    put(sys, "class/net/lo/address", "00:00:00:00:00:00\n")
    put(sys, "class/net/eno1/address", MAC + "\n")
    put(sys, "class/net/ibp26s0/address", IB_ADDRESS + "\n")
    for bus, (vendor, device, cls) in enumerate(
        [
            ("0x10de", "0x2335", "0x030200"),
            ("0x10de", "0x2335", "0x030200"),
            ("0x15b3", "0x1021", "0x020700"),
        ]
    ):
        for name, value in (("vendor", vendor), ("device", device), ("class", cls)):
            put(sys, f"bus/pci/devices/0000:{bus + 0x1B:02x}:00.0/{name}", value + "\n")
    put(proc, "cpuinfo", "".join(CPU.format(i) for i in range(4)))
    put(proc, "meminfo", "MemTotal:       2113929216 kB\nMemFree: 1 kB\n")
    return sys, proc


def run_init(tmp_path: Path, script: str) -> str:
    sys, proc = fake_machine(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "AIORCH_RAMDISK_SOURCED": "1", "W": str(tmp_path),
           "SYS": str(sys), "PROC": str(proc), "mac": MAC}  # fmt: skip
    done = subprocess.run(["sh", "-c", f". {INIT}; {script}"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_inventory_of_a_gpu_server_is_what_the_contract_accepts(tmp_path):
    inventory = Inventory.model_validate_json(run_init(tmp_path, "inventory"))
    assert inventory.boot_mac == MAC and inventory.cpus == 4
    assert inventory.memory_bytes == 2113929216 * 1024
    assert inventory.cpu_model == "Intel(R) Xeon(R) Platinum 8480+"
    assert inventory.system.serial == "S5432100" and inventory.system.uuid is None
    disks = {d.name: d for d in inventory.disks}
    assert set(disks) == {"nvme0n1", "sda"}
    assert disks["nvme0n1"].size_bytes == 7501476528 * 512
    assert disks["nvme0n1"].serial == "S6EWNA0T100001"
    assert disks["nvme0n1"].model == "SAMSUNG MZQL23T8HCLS-00A07"
    assert disks["nvme0n1"].rotational is False and disks["sda"].rotational is True
    assert disks["sda"].serial == "WD-WX12345678"  # from the SCSI serial page
    # InfiniBand's 20-byte link address is no MAC: left out, the rest stays.
    assert [(n.name, n.mac) for n in inventory.nics] == [("eno1", MAC)]
    assert len(inventory.gpus()) == 2 and len(inventory.pci) == 3


@pytest.mark.parametrize(
    ("call", "expect"),
    [
        (
            "result wait true '' '{kind: $kind, ok: $ok, detail: $detail}'",
            {"kind": "wait", "ok": True},
        ),
        (
            "result deploy false 'no disk sdz' '{kind: $kind, ok: $ok, detail: $detail}'",
            {"kind": "deploy", "ok": False, "detail": "no disk sdz"},
        ),
    ],
)
def test_results_are_what_the_contract_accepts(tmp_path, call: str, expect: dict[str, Any]):
    run_init(tmp_path, call)
    result = ActionResult.model_validate_json((tmp_path / "result.json").read_text())
    assert result.model_dump(include=set(expect)) == expect


def test_the_cmdline_token_goes_to_a_private_curl_config_only(tmp_path):
    cmdline = tmp_path / "cmdline"
    token = "tok-" + "x" * 40
    cmdline.write_text(f"console=ttyS0 aiorch.hub=https://10.0.2.100:8443 aiorch.token={token} "
                       "aiorch.mac=B8-3F-D2-10-20-30\n")  # fmt: skip
    (tmp_path / "ca.pem").write_text("pem\n")
    script = (f"sed -e 's#/proc/cmdline#{cmdline}#; s#/etc/aiorch/ca.pem#{tmp_path}/ca.pem#' {INIT}"
              " > init.sh && AIORCH_RAMDISK_SOURCED=1 . ./init.sh && read_cmdline && "
              'echo "$hub $mac ${token:-unset}"')  # fmt: skip
    out = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "W": str(tmp_path)}, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == f"https://10.0.2.100:8443 {MAC} unset"
    assert token not in out.stdout + out.stderr
    conf = tmp_path / "curl.conf"
    assert conf.read_text() == f'header = "Authorization: Bearer {token}"\n'
    assert conf.stat().st_mode & 0o077 == 0


def test_partition_names_follow_the_kernel(tmp_path):
    out = run_init(tmp_path, "for d in vda sda nvme0n1 mmcblk0; do part_name $d 1; done")
    assert out.split() == ["vda1", "sda1", "nvme0n1p1", "mmcblk0p1"]


def test_the_seed_is_written_byte_for_byte_and_never_run(tmp_path):
    hostile = 'x\'$(touch PWNED)`touch PWNED2`"; echo "$HOME\n'
    seed = [
        {"path": "/etc/hostname", "content": "node7\n", "mode": "0644"},
        {"path": "/etc/aiorch/seed/enroll-token", "content": hostile, "mode": "0600"},
        {"path": "/root/.ssh/authorized_keys", "content": "ssh-ed25519 AAAA ops\n", "mode": "0600"},
    ]
    example = json.loads((EXAMPLES / "action-deploy.json").read_text())
    action = {"kind": "deploy", "params": {**example["params"], "seed": seed}}
    DeployParams.model_validate(action["params"])
    (tmp_path / "answer").write_text(json.dumps(action))
    run_init(tmp_path, "cd $W && write_seeds")
    root = tmp_path / "root"
    assert (root / "etc/aiorch/seed/enroll-token").read_text() == hostile
    assert (root / "etc/hostname").read_text() == "node7\n"
    assert not list(tmp_path.glob("PWNED*"))
    modes = {p: oct((root / p).stat().st_mode & 0o777) for p in
             ("etc/hostname", "etc/aiorch/seed/enroll-token", "root/.ssh/authorized_keys",
              "root/.ssh", "etc/aiorch/seed")}  # fmt: skip
    assert modes == {"etc/hostname": "0o644", "etc/aiorch/seed/enroll-token": "0o600",
                     "root/.ssh/authorized_keys": "0o600", "root/.ssh": "0o700",
                     "etc/aiorch/seed": "0o700"}  # fmt: skip


def test_a_wipe_outcome_is_only_what_the_wipe_says_whatever_wipefs_prints(tmp_path):
    """wipefs prints "calling ioctl to re-read partition table" on stdout, even with -q, after
    it erases a partition table: the lab's provisioned VM failed its release on that."""
    stubs = ('wipefs() { echo "$2: calling ioctl to re-read partition table: Success"; }; '
             "zero() { return 0; }; param() { echo metadata; }; ")  # fmt: skip
    run_init(tmp_path, stubs + "wipe")
    result = ActionResult.model_validate_json((tmp_path / "result.json").read_text())
    assert result.ok, result.detail
    assert [(d.name, d.ok) for d in result.disks] == [("nvme0n1", True), ("sda", True)]


def test_a_wipe_step_that_says_something_else_fails_that_disk(tmp_path):
    run_init(tmp_path, "wipe_metadata() { echo surprise; }; param() { echo metadata; }; wipe")
    result = ActionResult.model_validate_json((tmp_path / "result.json").read_text())
    assert not result.ok and [d.ok for d in result.disks] == [False, False]
    assert result.disks[0].detail == "unexpected outcome: surprise"
