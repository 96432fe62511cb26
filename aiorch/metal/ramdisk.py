"""The aiorch ramdisk, built from the site repository's debs: a Debian kernel, busybox, the
tools of inventory, burn-in and wipe with exactly the libraries they load, a few kernel
modules, and the init script (ramdisk_init.sh) that talks to the hub (contract.py).

Everything comes out of the debs (`dpkg-deb -x`), nothing from the build machine, and the
initrd is a deterministic cpio: the same debs give the same bytes, so a machine boots what
its digest says, and a build whose inputs did not change is reused. The hub's CA goes into a
second small cpio (`with_ca`), which Linux unpacks over the first one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aiorch.errors import UserError
from aiorch.metal import elf
from aiorch.metal.cpio import Entry, write_initramfs
from edge_agent.digest import sha256_file

LAYOUT = 1  # bump when the initrd's layout changes without its inputs changing
INIT = resources.files("aiorch.metal") / "ramdisk_init.sh"
CA_PATH = "etc/aiorch/ca.pem"  # where the init script finds the CA it verifies the hub by
# Storage and NICs of a lab VM (virtio, emulated NVMe, AHCI) and of common servers, best
# effort: a module the kernel lacks (or has built in) is left out.
MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "nvme", "ahci", "sd_mod",
    "e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en", "mlx5_core",
    "crc32c_generic", "ext4",  # deploy: the seed goes onto the new root's ext4
)  # fmt: skip
TOOLS = ("curl", "fio", "hdparm", "jq", "kmod", "lsblk", "nvme", "sfdisk", "smartctl", "stress-ng",
         "wipefs")  # fmt: skip
BIN_DIRS = ("usr/sbin", "usr/bin", "sbin", "bin")
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib", "lib")
LIB_DIR = "lib/x86_64-linux-gnu"
LOADER = "ld-linux-x86-64.so.2"
_KERNEL_DEB = re.compile(r"^linux-image-\d[^_]*_[^_]+_amd64\.deb$")
_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)")
RECORD = "ramdisk.json"


class RamdiskError(UserError):
    """The debs cannot make a ramdisk: the message names what is missing."""


@dataclass(frozen=True)
class RamdiskFiles:
    """What the hub serves: the kernel and the initrd, and one sha256 over both."""

    kernel: Path
    initrd: Path
    digest: str


def _digest(kernel: Path, initrd: Path) -> str:
    """One sha256 over the pair: of the two files' own sha256s."""
    return hashlib.sha256(f"{sha256_file(kernel)} {sha256_file(initrd)}".encode()).hexdigest()


def _debs(debs_dir: Path) -> list[Path]:
    if not debs_dir.is_dir():
        raise RamdiskError(f"{debs_dir} is not a directory of debs")
    debs = sorted(debs_dir.glob("*.deb"))
    if not any(_KERNEL_DEB.match(d.name) for d in debs):
        raise RamdiskError(
            f"{debs_dir} has no Debian kernel (linux-image-<version>-amd64_*.deb): "
            "build the site repository with the ramdisk packages"
        )
    return debs


def _inputs(debs: list[Path]) -> str:
    """The key of a build: layout, init script, module and tool lists, every deb's bytes."""
    record = {
        "layout": LAYOUT,
        "init": hashlib.sha256(INIT.read_bytes()).hexdigest(),
        "modules": MODULES,
        "tools": TOOLS,
        "debs": [(d.name, sha256_file(d)) for d in debs],
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _extract(debs: list[Path], root: Path) -> None:
    def one(deb: Path) -> None:
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True)
        if proc.returncode != 0:
            raise RamdiskError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.decode().strip()}")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, debs))


def _real(root: Path, rel: str) -> Path | None:
    """`rel` inside `root` with its symlinks followed inside `root` (absolute links are
    relative to the root, as on the machine), or None when it leads nowhere."""
    for _ in range(40):
        path = root / rel
        if path.is_symlink():
            target = os.readlink(path)
            base = "" if target.startswith("/") else os.path.dirname(rel)
            rel = os.path.normpath(os.path.join(base, target.lstrip("/")))
            continue
        return path if path.is_file() else None
    return None


def _find(root: Path, name: str, dirs: Iterable[str]) -> Path | None:
    for where in dirs:
        if found := _real(root, f"{where}/{name}"):
            return found
    return None


def _userland(root: Path, debs_dir: Path) -> dict[str, Entry]:
    """busybox, the tools, and every library they load (found in the debs, not here)."""
    busybox = _find(root, "busybox", BIN_DIRS)
    tools = {name: _find(root, name, BIN_DIRS) for name in TOOLS}
    lacking = [n for n, p in {"busybox": busybox, **tools}.items() if p is None]
    if lacking:
        raise RamdiskError(
            f"{debs_dir} lacks {', '.join(lacking)}: no deb there ships it (RAMDISK_PACKAGES)"
        )
    assert busybox is not None
    entries = {
        "bin/busybox": Entry.file(busybox.read_bytes(), 0o755),
        "bin/sh": Entry.symlink("busybox"),
        "usr/sbin/modprobe": Entry.symlink("../bin/kmod"),
        f"lib64/{LOADER}": Entry.symlink(f"/{LIB_DIR}/{LOADER}"),
    }
    pending: list[tuple[str, Path]] = []
    for name, path in tools.items():
        assert path is not None
        entries[f"usr/bin/{name}"] = Entry.file(path.read_bytes(), 0o755)
        pending.append((name, path))
    while pending:
        who, path = pending.pop()
        sonames, extra = elf.dynamic(path) if elf.is_elf(path) else ([], [])
        dirs = [*LIB_DIRS, *(p.lstrip("/") for p in extra if p.startswith("/"))]
        for soname in sonames:
            if f"{LIB_DIR}/{soname}" in entries:
                continue
            lib = _find(root, soname, dirs)
            if lib is None:
                raise RamdiskError(f"{who} needs {soname}, which no deb in {debs_dir} has")
            entries[f"{LIB_DIR}/{soname}"] = Entry.file(lib.read_bytes(), 0o755)
            pending.append((soname, lib))
    return entries


def _kernel_version(root: Path) -> str:
    versions = sorted(p.parent.name for p in (root / "lib/modules").glob("*/kernel"))
    if len(versions) != 1 or not (root / f"boot/vmlinuz-{versions[0]}").is_file():
        found = ", ".join(versions) or "none"
        raise RamdiskError(f"want exactly one kernel with its vmlinuz in the debs, found {found}")
    return versions[0]


def _modules(root: Path, version: str, work: Path) -> tuple[dict[str, Entry], list[str]]:
    """The wanted modules with what they depend on, indexed by depmod; and the names found."""
    tree = root / "lib/modules" / version
    index = {p.name.removesuffix(".ko").replace("-", "_"): p for p in tree.rglob("*.ko")}
    found = [name for name in MODULES if name in index]
    keep: dict[str, Path] = {}
    pending = list(found)
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        keep[name] = index[name]
        m = _DEPENDS.search(index[name].read_bytes())
        pending += [d.replace("-", "_") for d in (m.group(1).decode().split(",") if m else []) if d]
    small = work / "modules"
    dest = small / "lib/modules" / version
    for path in keep.values():
        (dest / path.parent.relative_to(tree)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / path.relative_to(tree))
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (tree / meta).is_file():
            shutil.copyfile(tree / meta, dest / meta)
    depmod = shutil.which("depmod") or next(
        (p for p in ("/usr/sbin/depmod", "/sbin/depmod") if os.path.exists(p)), None
    )
    if depmod is None:
        raise RamdiskError("depmod is missing: apt-get install kmod")
    proc = subprocess.run([depmod, "-b", str(small), version], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RamdiskError(f"depmod failed: {proc.stderr.strip()[-300:]}")
    entries = {
        str(p.relative_to(small)): Entry.file(p.read_bytes())
        for p in dest.rglob("*")
        if p.is_file()
    }
    return entries, found


def _base(modules: list[str]) -> dict[str, Entry]:
    entries = {d: Entry.directory() for d in ("proc", "sys", "dev", "run", "tmp", "etc/aiorch")}
    entries["dev/console"] = Entry.chardev(5, 1)
    entries["init"] = Entry.file(INIT.read_bytes(), 0o755)
    entries["etc/aiorch/modules"] = Entry.file("".join(f"{m}\n" for m in modules).encode())
    return entries


def _reuse(out_dir: Path, inputs: str) -> RamdiskFiles | None:
    try:
        record = json.loads((out_dir / RECORD).read_text())
        files = RamdiskFiles(out_dir / record["kernel"], out_dir / record["initrd"], "")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("inputs") != inputs or not files.kernel.is_file() or not files.initrd.is_file():
        return None
    digest = _digest(files.kernel, files.initrd)
    return RamdiskFiles(files.kernel, files.initrd, digest) if digest == record["digest"] else None


def build_ramdisk(debs_dir: Path, out_dir: Path) -> RamdiskFiles:
    """Kernel and initrd in `out_dir` from the debs in `debs_dir` (reused when unchanged)."""
    debs = _debs(debs_dir)
    inputs = _inputs(debs)
    if reused := _reuse(out_dir, inputs):
        return reused
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ramdisk-", dir=out_dir) as tmp:
        work = Path(tmp)
        root = work / "root"
        _extract(debs, root)
        version = _kernel_version(root)
        modules, found = _modules(root, version, work)
        entries = {**_base(found), **_userland(root, debs_dir), **modules}
        kernel, initrd = out_dir / "vmlinuz", out_dir / "initrd.img"
        shutil.copyfile(root / f"boot/vmlinuz-{version}", work / kernel.name)
        write_initramfs(entries, work / initrd.name)
        digest = _digest(work / kernel.name, work / initrd.name)
        record = {"inputs": inputs, "digest": digest, "kernel": kernel.name,
                  "initrd": initrd.name, "kernel_version": version, "modules": found}  # fmt: skip
        (work / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        # Renamed into place, the record last; reuse checks the files against the record.
        for name in (kernel.name, initrd.name, RECORD):
            os.replace(work / name, out_dir / name)
    return RamdiskFiles(kernel, initrd, digest)


def with_ca(files: RamdiskFiles, ca_pem: bytes, out_dir: Path) -> Path:
    """A second initrd holding the hub's CA at /etc/aiorch/ca.pem, named after the ramdisk
    and the CA it pairs (the hub serves it after `files.initrd`)."""
    if not ca_pem.lstrip().startswith(b"-----BEGIN CERTIFICATE-----"):
        raise RamdiskError("the hub's CA is not a PEM certificate")
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"ca-{files.digest[:12]}-{hashlib.sha256(ca_pem).hexdigest()[:12]}.img"
    if not dest.exists():
        write_initramfs({CA_PATH: Entry.file(ca_pem)}, dest)
    return dest
