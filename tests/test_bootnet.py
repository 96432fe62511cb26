"""The boot network's proxy-DHCP: a dnsmasq config that dnsmasq itself accepts, beside the
site's DHCP (proxy mode, no DNS), handing PXE ROMs iPXE and iPXE the hub's chain script."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.errors import UserError
from aiorch.metal.bootnet import BIOS_FILE, EFI_FILE, BootNet


def _net(tmp_path: Path, **overrides: str) -> BootNet:
    fields = {"interface": "podman1", "subnet": "10.89.7.0/24", "boot_url": "http://10.89.7.1:8081"}
    return BootNet(workdir=tmp_path, **{**fields, **overrides})  # type: ignore[arg-type]


def test_the_config_is_proxy_dhcp_and_tftp_and_dnsmasq_accepts_it(tmp_path: Path) -> None:
    net = _net(tmp_path)
    conf = net.prepare().read_text().splitlines()
    assert "port=0" in conf and "dhcp-range=10.89.7.0,proxy,255.255.255.0" in conf
    assert 'pxe-service=tag:!ipxe,x86PC,"aiorch",undionly' in conf
    assert 'pxe-service=tag:ipxe,X86-64_EFI,"aiorch",http://10.89.7.1:8081/boot/chain.ipxe' in conf
    assert not any(line.startswith("dhcp-range") and "proxy" not in line for line in conf)
    tftp = {p.name: p.stat().st_size for p in net.tftp_root.iterdir()}
    assert set(tftp) == {BIOS_FILE, EFI_FILE} and min(tftp.values()) > 50_000


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("interface", "eth0\nport=53", "not a network interface name"),
        ("subnet", "10.89.7.1/24", "not a subnet"),
        ("boot_url", "https://10.89.7.1:8081", "http://ADDRESS:PORT"),
        ("boot_url", "http://10.89.7.1:8081\nenable-ra", "http://ADDRESS:PORT"),
    ],
)
def test_bad_values_never_reach_the_config(
    tmp_path: Path, field: str, value: str, words: str
) -> None:
    with pytest.raises(UserError, match=words):
        _net(tmp_path, **{field: value})


def test_a_missing_ipxe_binary_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no iPXE binary at .*undionly.kpxe"):
        _net(tmp_path).prepare(ipxe_dir=tmp_path / "none")
