"""Bare metal in the lab for tests: the boot network on the shared lab's bridge (site DHCP,
aiorch's proxy-DHCP and TFTP), QEMU TCG machines whose BMC is sushy-emulator's fake
(simulated), and a hub on the lab gateway with its boot listener.

Registered from tests/conftest.py (``pytest_plugins``). Its fixtures use the shared `lab`, so
the tests that take them are lab tests (tests/tiers.py marks them by that fixture).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aiorch.hub.process import free_port
from aiorch.lab import Lab
from aiorch.lab.metal import MetalLab
from aiorch.metal.image_record import ImageManifest
from aiorch.metal.ramdisk import with_ca
from tests.fixtures_hub import HubProcess
from tests.fixtures_image import cached_image
from tests.fixtures_ramdisk import cached_ramdisk

# The lab's machines, by name: their NICs' MACs (the BMC knows them; enrollment names them).
MACHINES = {"pxe1": "52:54:00:bb:00:01", "pxe2": "52:54:00:bb:00:02", "dark": "52:54:00:bb:00:03"}


class MetalHub(HubProcess):
    """A hub with its boot listener on `address`: loopback, or a lab gateway (where the API
    listens too, same port). It serves the ramdisk in `ramdisk_dir`; None: no ramdisk."""

    def __init__(
        self,
        data_dir: Path,
        address: str = "127.0.0.1",
        ramdisk_dir: Path | None = None,
        image_dir: Path | None = None,
        ssh_key: Path | None = None,
    ) -> None:
        self.boot_url = f"http://{address}:{free_port()}"
        super().__init__(data_dir, serve_args=["--boot-listen", self.boot_url[7:]])
        if address != "127.0.0.1":
            self.listen = [f"{address}:{self.port}"]
        self.lab_url = f"https://{address}:{self.port}"
        self.ramdisk_dir = ramdisk_dir
        self.image_dir, self.ssh_key = image_dir, ssh_key

    def start(self, **kwargs: Any) -> MetalHub:
        with pytest.MonkeyPatch.context() as env:
            if self.ramdisk_dir is not None:
                env.setenv("AIORCH_METAL_HUB_URL", self.lab_url)
                env.setenv("AIORCH_METAL_RAMDISK_DIR", str(self.ramdisk_dir))
            if self.image_dir is not None:
                env.setenv("AIORCH_METAL_IMAGE_DIR", str(self.image_dir))
            if self.ssh_key is not None:
                env.setenv("AIORCH_METAL_SSH_KEY", str(self.ssh_key))
            super().start(**kwargs)
        return self

    def boot(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET on the boot listener, as a machine's iPXE would."""
        return httpx.get(f"{self.boot_url}{path}", timeout=10, **kwargs)

    def class_set(self, name: str, profile: str) -> None:
        path = self.data_dir.parent / f"{name}.yaml"
        path.write_text(profile)
        self.cli("machines", "class-set", name, "-f", str(path))

    def enroll(self, metal: MetalLab, name: str, cls: str) -> None:
        assert metal.bmc is not None
        system = metal.uuid(name)
        creds = self.data_dir.parent / "bmc-credentials"
        creds.write_text(f"{metal.bmc.username}:{metal.bmc.password}\n")
        self.cli("machines", "enroll", name, "--bmc", metal.bmc.system_url(system),
                 "--mac", MACHINES[name], "--credentials", str(creds), "--class", cls)  # fmt: skip

    def show(self, name: str) -> dict[str, Any]:
        return dict(self.cli_json("machines", "show", name))


DISK_MIB = {"pxe1": 2048}  # the machine that is provisioned: its disks hold the root image
UEFI = {"pxe2"}  # booted by OVMF, the rest by SeaBIOS: PXE and the ramdisk both ways
SITE = "lab-metal"  # the site provisioned machines enroll into
# The lab's configure run: the site's edge agent playbook (the whole site.yml installs the
# site's packages from a full site repository, for many minutes on an emulated CPU), with the
# agent the image carries (so pip asks no index) and no GPUs.
CONFIGURE_PLAYBOOK = "edge_agent.yml"
SITE_VARS = {
    "aiorch_edge_agent_version": version("aiorch"),
    "aiorch_edge_agent_gpu_backend": "none",
}


@pytest.fixture(scope="module")
def metal_hub(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetalHub]:
    """The hub on the lab gateway, with its boot listener, the ramdisk, the root images, and
    the SSH key its runs log into provisioned machines with."""
    work = tmp_path_factory.mktemp("metal-hub")
    for sub in ("ramdisk", "images"):
        (work / sub).mkdir()
    hub = MetalHub(work / "hub", lab.gateway, work / "ramdisk", image_dir=work / "images",
                   ssh_key=machine_key(work / "ssh"))  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIORCH_METAL_CONFIGURE_PLAYBOOK", CONFIGURE_PLAYBOOK)
        hub.start()
    site = work / "site-vars.yml"
    site.write_text(yaml.safe_dump({"all": {"children": {SITE: {"vars": SITE_VARS}}}}))
    hub.cli("inventory", "import", str(site))
    yield hub
    hub.stop()


def machine_key(directory: Path) -> Path:
    """A fresh ed25519 key for the hub's runs on provisioned machines."""
    directory.mkdir(mode=0o700, exist_ok=True)
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aiorch-hub",
                    "-f", str(key)], check=True)  # fmt: skip
    return key


@pytest.fixture(scope="module")
def metal_image(metal_hub: MetalHub) -> ImageManifest:
    """The real root image (built from the site repository, cached) where the hub serves it."""
    files = cached_image()
    assert metal_hub.image_dir is not None
    for source in (files.image, files.manifest):
        (metal_hub.image_dir / source.name).symlink_to(source)
    return ImageManifest.model_validate_json(files.manifest.read_bytes())


@pytest.fixture(scope="module")
def metal_ramdisk(metal_hub: MetalHub) -> Path:
    """The real ramdisk, built from Debian's debs (cached), and its initrd of this hub's CA,
    where the boot listener serves them."""
    files = cached_ramdisk()
    ca = with_ca(files, metal_hub.ca_path.read_bytes(), metal_hub.data_dir.parent / "ca")
    served = metal_hub.ramdisk_dir
    assert served is not None
    for source, name in ((files.kernel, "vmlinuz"), (files.initrd, "10-userland.img"),
                         (ca, "20-ca.img")):  # fmt: skip
        shutil.copyfile(source, served / name)
    return served


@pytest.fixture(scope="module")
def metal(
    lab: Lab, metal_hub: MetalHub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetalLab]:
    machines = MetalLab(lab.bridge, lab.subnet, metal_hub.boot_url, tmp_path_factory.mktemp("m"))
    systems = [machines.add(name, mac, pxe=name != "dark", disk_mib=DISK_MIB.get(name, 64),
                            uefi=name in UEFI) for name, mac in MACHINES.items()]  # fmt: skip
    machines.start(systems)
    yield machines
    machines.stop()
