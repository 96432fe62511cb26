"""A root image as the hub serves it: `NAME.img.gz` (a whole-disk raw image, gzip'd) with its
manifest `NAME.json` beside it, as `aiorch repo image` writes them into the directory that
AIORCH_METAL_IMAGE_DIR names. The manifest is the image's one description: the sha256 the
ramdisk checks while it streams, the size the root disk must have, the partition that holds
the root (where the first-boot seed goes), and what is in it."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiorch.errors import InvalidInput, NotFound
from aiorch.metal.contract import Disk

IMAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")
SUFFIX, MANIFEST_SUFFIX = ".img.gz", ".json"


class ImageManifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of the .img.gz, as it is streamed
    raw_size_bytes: int = Field(ge=1 << 20)  # what the root disk must hold
    root_partition: int = Field(1, ge=1, le=128)
    kernel_version: str = ""
    packages: dict[str, str] = Field(default_factory=dict)


def check_image_name(name: str) -> str:
    if not IMAGE_NAME_RE.match(name):
        raise InvalidInput(f"invalid image name {name[:64]!r}: lowercase letters, digits, . _ -")
    return name


def image_names(directory: Path) -> list[str]:
    return sorted(p.name.removesuffix(SUFFIX) for p in directory.glob(f"*{SUFFIX}"))


def find_image(directory: Path, name: str) -> tuple[Path, ImageManifest]:
    """The image file and its manifest; NotFound naming the images there are."""
    check_image_name(name)
    path = directory / f"{name}{SUFFIX}"
    manifest_path = directory / f"{name}{MANIFEST_SUFFIX}"
    if not path.is_file() or not manifest_path.is_file():
        known = ", ".join(image_names(directory)) or "none"
        raise NotFound(f"no image named {name} in {directory} (there are: {known})")
    try:
        return path, ImageManifest.model_validate_json(manifest_path.read_bytes())
    except (OSError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise InvalidInput(
            f"image {name}: its manifest {manifest_path} is unreadable: {first}"
        ) from None


def choose_root_disk(disks: list[Disk], size_bytes: int, wanted: str | None) -> str:
    """The disk an image of `size_bytes` goes onto: `wanted` if it is there and big enough,
    else the smallest disk that holds it (Ironic's default root device), by name on a tie."""
    sizes = {d.name: d.size_bytes for d in disks}
    if wanted is not None:
        if wanted not in sizes:
            raise InvalidInput(
                f"the machine has no disk {wanted} (it has: {', '.join(sorted(sizes)) or 'none'})"
            )
        if sizes[wanted] < size_bytes:
            raise InvalidInput(
                f"disk {wanted} holds {sizes[wanted]} bytes; the image needs {size_bytes}"
            )
        return wanted
    fitting = sorted((size, name) for name, size in sizes.items() if size >= size_bytes)
    if not fitting:
        raise InvalidInput(
            f"no disk of this machine holds the image ({size_bytes} bytes; it has: "
            + (", ".join(f"{n} {s}" for n, s in sorted(sizes.items())) or "no disks")
            + ")"
        )
    return fitting[0][1]


# The first-boot seed the ramdisk writes onto a provisioned root (absolute paths on the
# machine), and the image's aiorch-firstboot unit reads: the agent enrolls with the one-use
# token (mode 0600, removed once enrolled), then runs.
SEED_HOSTNAME = "/etc/hostname"
SEED_AGENT_CONFIG = "/etc/aiorch/agent.yaml"  # the keys the role's agent.yaml.j2 writes
SEED_ENROLL_TOKEN = "/etc/aiorch/seed/enroll-token"
SEED_AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
