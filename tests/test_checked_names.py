"""Names, digests and boot values the hub checks with Python's `re`, where `$` also matches
before a final newline: each check refuses a valid value with a newline after it (a second
line in an iPXE script, a unit file or a path), and takes the value itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiorch.errors import AiorchError, UserError
from aiorch.hub.services.job_artifacts import _checked
from aiorch.hub.services.machines import check_name
from aiorch.lab.layout import check_name as check_lab_name
from aiorch.metal.bootnet import BootNet
from aiorch.metal.image_record import check_image_name
from aiorch.metal.ipxe import check_file_name, kernel_cmdline

SHA = "ab" * 32
TOKEN = "t0k3n_" + "a" * 20


def _bootnet(interface: str = "br-lab", boot_url: str = "http://10.89.0.1:8701") -> BootNet:
    return BootNet(interface, "10.89.0.0/24", boot_url, Path("/nonexistent"))


def _cmdline(token: str) -> str:
    return kernel_cmdline("https://10.89.0.1:8700", token, "52:54:00:00:00:01")


CHECKS: list[tuple[str, Callable[[str], Any], str]] = [
    ("machine name", check_name, "gpu-01"),
    ("lab name", check_lab_name, "lab"),
    ("image name", check_image_name, "aiorch-root"),
    ("artifact digest", _checked, SHA),
    ("boot file name", check_file_name, "vmlinuz"),
    ("boot token", _cmdline, TOKEN),
    ("boot interface", _bootnet, "br-lab"),
    ("boot URL", lambda url: _bootnet(boot_url=url), "http://10.89.0.1:8701"),
]


@pytest.mark.parametrize(("what", "check", "value"), CHECKS, ids=[c[0] for c in CHECKS])
def test_a_trailing_newline_never_passes_a_hub_check(
    what: str, check: Callable[[str], Any], value: str
) -> None:
    check(value)
    with pytest.raises((ValueError, UserError, AiorchError)):
        check(value + "\n")
