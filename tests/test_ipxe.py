"""iPXE scripts and the ramdisk's kernel command line: no stored value can change the boot."""

from __future__ import annotations

import pytest

from aiorch.metal import ipxe

MAC = "52:54:00:00:00:01"


@pytest.mark.parametrize(
    ("hub_url", "token", "words"),
    [
        ("http://hub:1", "t" * 32, "want an https URL"),
        ("https://hub:1 init=/bin/sh", "t" * 32, "cannot go into an iPXE script"),
        ("https://hub:1", "short", "16 to 256 URL-safe"),
        ("https://hub:1", "t" * 31 + ";", "16 to 256 URL-safe"),
    ],
)
def test_kernel_cmdline_refuses_what_could_change_the_boot(
    hub_url: str, token: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        ipxe.kernel_cmdline(hub_url, token, MAC)


def test_scripts_quote_nothing_a_stored_name_could_turn_into_a_command() -> None:
    script = ipxe.nothing_script("a ${secret} name\nshell; exit 0")
    assert script == "#!ipxe\necho aiorch: a __secret_ name shell_ exit 0\nsleep 5\nexit 1\n"
    with pytest.raises(ValueError, match="not a boot file name"):
        ipxe.BootImage(kernel="vmlinuz", initrds=("../etc/shadow",))
    assert ipxe.local_disk_script("serving").endswith("\nexit\n")


def test_kernel_cmdline_names_the_hub_the_token_the_mac_and_each_initrd() -> None:
    line = ipxe.kernel_cmdline("https://10.88.0.1:8700/", "t" * 43, "52-54-00-00-00-0A", ["a.gz"])
    assert line == (
        f"console=ttyS0 quiet aiorch.hub=https://10.88.0.1:8700 aiorch.token={'t' * 43}"
        " aiorch.mac=52:54:00:00:00:0a initrd=a.gz"
    )
