"""The root image the ramdisk writes onto a machine's disk, built from the site repository.

mmdebstrap installs IMAGE_PACKAGES from the repository's signed debs alone (a ``file:``
source verified with the repository's own keyring; never the internet), image_root configures
the OS and installs the agent from the repository's wheels, and the tree becomes the root of
a GPT disk that boots either way a server's firmware does: BIOS (grub's core in a BIOS boot
partition) and UEFI (grub on an EFI system partition, at the removable-media path
EFI/BOOT/BOOTX64.EFI, which firmware finds without a boot entry). The hub serves the
``.img.gz`` by its sha256, which the ramdisk checks while it streams; the ramdisk then writes
the seed (SEED_*) onto the root partition. A build whose inputs did not change is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiorch.metal import image_root
from aiorch.metal.image_record import (
    SEED_AGENT_CONFIG,
    SEED_AUTHORIZED_KEYS,
    SEED_ENROLL_TOKEN,
    SEED_HOSTNAME,
)
from aiorch.metal.image_root import (
    DiskIds,
    ImageError,
    chroot_mounts,
    configure,
    grub_cfg,
    mounted,
    run,
)
from aiorch.repo.debs import KEYRING_FILE, SUITE
from aiorch.repo.packages import IMAGE_PACKAGES, REQUIRED_PATTERN
from aiorch.wait import wait_until
from edge_agent.digest import sha256_file

__all__ = [
    "ESP_PARTITION", "LAYOUT", "ROOT_PARTITION", "SEED_AGENT_CONFIG", "SEED_AUTHORIZED_KEYS",
    "SEED_ENROLL_TOKEN", "SEED_HOSTNAME", "ImageError", "ImageFiles", "build_image",
]  # fmt: skip

# Bump when the image's layout or the root's configuration (image_root) changes: the inputs
# a build is reused by are the repository's, not this code.
LAYOUT = 2
ESP_PARTITION = 2  # the EFI system partition (vfat), at /boot/efi
ROOT_PARTITION = 3  # the ext4 root the ramdisk mounts to write the seed
ESP_MIB = 64  # FAT32's minimum cluster count at 512-byte sectors fits
# GRUB's UEFI image, as firmware finds it on removable media (no boot entry needed).
EFI_LOADER = "EFI/BOOT/BOOTX64.EFI"
# Built into that image: enough to find the root and read grub.cfg there, the rest loads from
# the root's /boot/grub/x86_64-efi as grub-install would have put it.
EFI_MODULES = (
    "part_gpt", "part_msdos", "fat", "ext2", "search", "search_fs_uuid", "normal",
    "configfile", "linux", "gzio", "echo", "test", "serial", "terminal", "efi_gop", "all_video",
)  # fmt: skip
# GPT partition types: GRUB's BIOS boot partition, the EFI system partition, Linux data.
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
DEFAULT_SIZE_MIB = 1536
NAME = "aiorch-root"
MIB = 1 << 20
VARIANT = "required"  # mmdebstrap's base: the Priority: required set (REQUIRED_PATTERN)
AUTOMOUNT = Path("/usr/share/mmdebstrap/hooks/file-mirror-automount")
# Each tool the build runs, and the Debian package that has it.
TOOLS = {
    "mmdebstrap": "mmdebstrap", "sfdisk": "fdisk", "losetup": "mount", "partx": "util-linux",
    "mount": "mount", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
    "gzip": "gzip", "chroot": "coreutils", "dpkg-query": "dpkg",
}  # fmt: skip
# Left out of the root: documentation and translations no machine reads (licences stay).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/locale/*",
)  # fmt: skip


@dataclass(frozen=True)
class ImageFiles:
    """What the hub serves: the gzip'd raw disk, the sha256 of that gzip file (what the ramdisk
    verifies while streaming), the raw size it unpacks to, and the manifest beside it."""

    image: Path
    sha256: str
    raw_size_bytes: int
    manifest: Path


def _includes() -> list[str]:
    return [p for p in IMAGE_PACKAGES if p != REQUIRED_PATTERN]


def _check_tools() -> None:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise ImageError(f"{tool} is missing: apt-get install {package}")
    if not AUTOMOUNT.is_dir():
        raise ImageError(f"{AUTOMOUNT} is missing: apt-get install mmdebstrap")
    if os.geteuid() != 0:
        raise ImageError("building the root image needs root (loop devices, mount, chroot)")


def _check_repo(repo: Path) -> bytes:
    """The repository's Packages index, once it has the keyring, the wheels and every package."""
    index_path, keyring = repo / "debs" / "Packages", repo / "debs" / KEYRING_FILE
    for path in (index_path, keyring, repo / "wheels" / "index.html"):
        if not path.is_file():
            raise ImageError(f"{repo} is not a site repository: {path} is missing")
    index = index_path.read_bytes()
    names = {ln[9:].strip() for ln in index.decode().splitlines() if ln.startswith("Package: ")}
    lacking = [p for p in _includes() if p.partition(":")[0] not in names]
    if lacking:
        raise ImageError(
            f"{repo} lacks {', '.join(lacking)}: build it with `aiorch repo build` (IMAGE_PACKAGES)"
        )
    if not list((repo / "wheels").glob("aiorch-*.whl")):
        raise ImageError(f"{repo}/wheels has no aiorch wheel: build it with `aiorch repo build`")
    return index


def _inputs(index: bytes, wheels: Path, size_mib: int) -> str:
    """The key of a build: the Packages index and the wheels it installs, the package list,
    the agent's unit (the role's template), the layout and the size."""
    record = {
        "layout": LAYOUT,
        "size_mib": size_mib,
        "packages": hashlib.sha256(index).hexdigest(),
        "includes": IMAGE_PACKAGES,
        "wheels": [(w.name, sha256_file(w)) for w in sorted(wheels.glob("*.whl"))],
        "agent_unit": image_root.agent_unit(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _reuse(out: Path, inputs: str) -> ImageFiles | None:
    manifest = out / f"{NAME}.json"
    try:
        record = json.loads(manifest.read_text())
        files = ImageFiles(out / record["image"], record["sha256"], record["raw_size_bytes"],
                           manifest)  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("inputs") != inputs or not files.image.is_file():
        return None
    return files if sha256_file(files.image) == files.sha256 else None


def _bootstrap(debs: Path, root: Path) -> None:
    """mmdebstrap from the site repository alone, verified with its own keyring."""
    source = f"deb [signed-by={debs / KEYRING_FILE}] file:{debs} ./"
    argv = ["mmdebstrap", "--mode=root", f"--variant={VARIANT}", "--format=directory",
            f"--hook-dir={AUTOMOUNT}", f"--include={','.join(_includes())}",
            *(f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES), SUITE, str(root), source]  # fmt: skip
    run(argv, "mmdebstrap")
    # The automount hook leaves the repository's mount point behind, empty: take it out.
    point = root / str(debs).lstrip("/")
    if point.is_dir():
        os.removedirs(point)


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(versions) != 1 or not (root / f"boot/initrd.img-{versions[0]}").is_file():
        raise ImageError(f"want one kernel with its initramfs in /boot, found {versions or 'none'}")
    return versions[0]


def _packages(root: Path) -> dict[str, str]:
    out = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
               "-f=${Package}\t${Version}\n"], "dpkg-query")  # fmt: skip
    return dict(line.split("\t", 1) for line in out.splitlines() if line)


@contextmanager
def _loop(raw: Path) -> Iterator[str]:
    """The disk file on a loop device, its partitions' nodes made: the disk's node."""
    disk = run(["losetup", "--find", "--show", "--partscan", str(raw)], "losetup").strip()
    last = f"{disk}p{ROOT_PARTITION}"
    try:
        try:
            wait_until(lambda: Path(last).exists(), timeout=5, what=last)
        except TimeoutError:  # the partition scan has not made the nodes: ask for them
            run(["partx", "--add", disk], f"partx --add {disk}")
            wait_until(lambda: Path(last).exists(), timeout=10, what=last)
        yield disk
    finally:
        subprocess.run(["losetup", "--detach", disk], capture_output=True, check=False)


@contextmanager
def _no_mounts_left(tmp: str) -> Iterator[Path]:
    """``tmp`` as the build's work directory; whatever is still mounted under it when the
    build ends (mmdebstrap killed mid-way leaves its /proc, /sys, /dev) is detached before
    the directory is deleted, so that the cleanup never deletes through a mount."""
    try:
        yield Path(tmp)
    finally:
        with open("/proc/self/mountinfo") as f:
            points = [ln.split()[4] for ln in f]
        for point in sorted((p for p in points if p.startswith(f"{tmp}/")), reverse=True):
            subprocess.run(["umount", "--lazy", point], capture_output=True)


def partition_table() -> str:
    """sfdisk's script of the layout: 1 MiB BIOS boot, the ESP, the root to the disk's end."""
    return (
        "label: gpt\n"
        f"start=2048, size=2048, type={BIOS_BOOT_TYPE}, name=bios-boot\n"
        f"size={ESP_MIB * MIB // 512}, type={ESP_TYPE}, name=esp\n"
        f"type={LINUX_TYPE}, name={NAME}\n"
    )


def _make_disk(raw: Path, root: Path, ids: DiskIds, size_mib: int, kernel: str) -> None:
    """A GPT disk of ``size_mib`` holding ``root``, with grub for BIOS and for UEFI."""
    with raw.open("wb") as f:
        f.truncate(size_mib * MIB)
    proc = subprocess.run(["sfdisk", "--quiet", str(raw)], input=partition_table(),
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise ImageError(f"sfdisk failed: {proc.stderr.strip()[-300:]}")
    with _loop(raw) as disk:
        esp, part = f"{disk}p{ESP_PARTITION}", f"{disk}p{ROOT_PARTITION}"
        run(["mkfs.ext4", "-q", "-U", ids.root_uuid, "-L", NAME, "-d", str(root), part],
            "mkfs.ext4")  # fmt: skip
        run(["mkfs.vfat", "-F", "32", "-S", "512", "-s", "1", "-i", ids.esp_id, "-n", "ESP", esp],
            "mkfs.vfat")  # fmt: skip
        mnt = raw.parent / "mnt"
        mnt.mkdir(exist_ok=True)
        with mounted(part, mnt), chroot_mounts(mnt):
            run(["chroot", str(mnt), "grub-install", "--target=i386-pc", disk], "grub-install")
            _install_efi_grub(mnt, esp, ids.root_uuid)
            (mnt / "boot/grub/grub.cfg").write_text(grub_cfg(ids.root_uuid, kernel))


def _install_efi_grub(mnt: Path, esp: str, root_uuid: str) -> None:
    """GRUB for UEFI without mounting the ESP (grub-install wants it mounted, and a build
    host's kernel may have no vfat): grub-mkimage in the root makes the image, which finds
    the root by UUID; mtools copies it onto the ESP at the removable path."""
    shutil.copytree(mnt / "usr/lib/grub/x86_64-efi", mnt / "boot/grub/x86_64-efi",
                    ignore=shutil.ignore_patterns("*.module", "*.image", "*.exec"))  # fmt: skip
    early, loader = mnt / "tmp/aiorch-early.cfg", mnt / "tmp/BOOTX64.EFI"
    early.write_text(f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
                     "set prefix=($root)/boot/grub\n")  # fmt: skip
    try:
        run(["chroot", str(mnt), "grub-mkimage", "-O", "x86_64-efi", "-o", "/tmp/BOOTX64.EFI",
             "-p", "/boot/grub", "-c", "/tmp/aiorch-early.cfg", *EFI_MODULES],
            "grub-mkimage -O x86_64-efi")  # fmt: skip
        # A partition's size needs no whole number of tracks: tell mtools not to check.
        mtools = ["env", "MTOOLS_SKIP_CHECK=1"]
        folder = EFI_LOADER.rsplit("/", 1)[0]
        run([*mtools, "mmd", "-i", esp, "::/EFI", f"::/{folder}"], "mmd (the ESP's folders)")
        run([*mtools, "mcopy", "-i", esp, str(loader), f"::/{EFI_LOADER}"],
            "mcopy (GRUB onto the ESP)")  # fmt: skip
    finally:
        early.unlink(missing_ok=True)
        loader.unlink(missing_ok=True)


def build_image(repo: Path, out: Path, size_mib: int = DEFAULT_SIZE_MIB) -> ImageFiles:
    """``NAME.img.gz`` and ``NAME.json`` in ``out`` from the site repository ``repo``
    (reused when its inputs did not change)."""
    if size_mib < 256:
        raise ImageError(f"an image of {size_mib} MiB cannot hold the root: give 256 or more")
    _check_tools()
    index = _check_repo(repo)
    inputs = _inputs(index, repo / "wheels", size_mib)
    if reused := _reuse(out, inputs):
        return reused
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".image-", dir=out) as tmp,
        _no_mounts_left(tmp) as work,
    ):
        root = work / "root"
        # The same inputs, the same ids.
        ids = DiskIds(str(uuid.UUID(hex=inputs[:32], version=4)), inputs[32:40].upper())
        _bootstrap(repo / "debs", root)
        with chroot_mounts(root):
            configure(root, ids, repo / "wheels")
        kernel, packages = _kernel_version(root), _packages(root)
        raw = work / f"{NAME}.raw"
        _make_disk(raw, root, ids, size_mib, kernel)
        gz = work / f"{NAME}.img.gz"
        with gz.open("wb") as f:
            proc = subprocess.run(["gzip", "-n", "-c", str(raw)], stdout=f, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise ImageError(f"gzip failed: {proc.stderr.decode().strip()[-300:]}")
        digest, raw_size = sha256_file(gz), raw.stat().st_size
        record = {
            "image": gz.name, "sha256": digest, "raw_size_bytes": raw_size,
            "root_partition": ROOT_PARTITION, "root_uuid": ids.root_uuid, "esp_id": ids.esp_id,
            "kernel_version": kernel, "layout": LAYOUT, "size_mib": size_mib, "inputs": inputs,
            "packages": packages,
        }  # fmt: skip
        manifest = work / f"{NAME}.json"
        manifest.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        # Renamed into place, the manifest last: reuse checks the image against it.
        for name in (gz.name, manifest.name):
            os.replace(work / name, out / name)
    return ImageFiles(out / gz.name, digest, raw_size, out / manifest.name)
