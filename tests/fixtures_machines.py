"""Machines for tests: a Redfish BMC emulator (sushy-tools fake, on loopback) with five
systems, their BMC credentials, and enrollment through the CLI.

Registered from tests/conftest.py (``pytest_plugins``)."""

from __future__ import annotations

import sqlite3
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiorch.hub.sealing import Sealer
from aiorch.hub.services.machines import token_binding
from aiorch.lab.bmc_emulators import FakeSystem, SushyEmulator
from tests.fixtures_hub import HubProcess

PASSWORD = "lab-password"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    systems = [
        FakeSystem(uuid=str(uuidlib.uuid4()), name=f"node{i}", macs=[mac(i)]) for i in range(1, 6)
    ]
    with SushyEmulator(tmp_path_factory.mktemp("sushy"), systems, password=PASSWORD) as bmc:
        yield bmc


def mac(i: int) -> str:
    return f"52:54:00:00:00:{i:02x}"


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("creds") / "bmc"
    path.write_text(f"admin:{PASSWORD}\n")
    return path


def enroll(
    hub: HubProcess, emulator: SushyEmulator, creds: Path, i: int, name: str, *extra: str
) -> dict[str, Any]:
    system = emulator.systems[i - 1]
    return hub.cli_json(
        "machines",
        "enroll",
        name,
        "--bmc",
        emulator.system_url(system.uuid),
        "--mac",
        mac(i),
        "--credentials",
        str(creds),
        *extra,
    )


def boot_token(hub: HubProcess, name: str) -> str:
    """What the boot script would hand the machine's ramdisk (read as the hub would)."""
    db = sqlite3.connect(hub.data_dir / "aiorch.db")
    (sealed,) = db.execute("SELECT boot_token FROM machines WHERE name = ?", [name]).fetchone()
    return Sealer.in_dir(hub.data_dir).unseal(sealed, token_binding(name))


def inventory(i: int) -> dict[str, Any]:
    return {
        "boot_mac": mac(i),
        "system": {"manufacturer": "QEMU", "serial": f"S{i}", "uuid": ""},
        "cpus": 1,
        "memory_bytes": 1024**3,
        "disks": [{"name": "vda", "size_bytes": 1 << 31, "serial": "D1", "rotational": False}],
        "nics": [{"name": "eth0", "mac": mac(i)}],
        "pci": [],
    }
