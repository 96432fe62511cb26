"""The ramdisk build from real Debian debs (the RAMDISK_PACKAGES closure, fetched once and
cached): deterministic bytes, reuse, a complete userland, the CA initrd, one-line errors."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pytest

from aiorch.metal import elf
from aiorch.metal.ramdisk import LIB_DIR, RamdiskError, build_ramdisk, with_ca
from tests.fixtures_ramdisk import cached_ramdisk, ramdisk_debs

# A download (first run) and a full build from the debs take longer than a unit test's 120 s.
pytestmark = pytest.mark.timeout(900)
CA = b"-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"


def members(initrd: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """A gzip'd newc cpio (or several, back to back) read back: name -> (mode, uid, mtime,
    data), checking the header fields a reproducible image must not vary."""
    raw = gzip.decompress(initrd.read_bytes())  # reads every concatenated member
    out, at = {}, 0
    while at < len(raw):
        if raw[at] == 0:  # padding between concatenated archives
            at += 1
            continue
        assert raw[at : at + 6] == b"070701"
        f = [int(raw[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, mtime, size, namesize = f[1], f[2], f[5], f[6], f[11]
        name = raw[at + 110 : at + 110 + namesize - 1].decode()
        at += 110 + namesize + (-(110 + namesize) % 4)
        if name != "TRAILER!!!":  # another archive may follow it
            out[name] = (mode, uid, mtime, raw[at : at + size])
        at += size + (-size % 4)
    return out


@pytest.fixture(scope="module")
def debs() -> Path:
    return ramdisk_debs()


def test_same_debs_give_the_same_bytes_and_a_second_build_is_reused(debs, tmp_path):
    cached = cached_ramdisk()
    fresh = build_ramdisk(debs, tmp_path / "a")
    assert fresh.digest == cached.digest
    assert fresh.initrd.read_bytes() == cached.initrd.read_bytes()
    stamp = fresh.initrd.stat().st_mtime_ns
    again = build_ramdisk(debs, tmp_path / "a")
    assert again == fresh and again.initrd.stat().st_mtime_ns == stamp
    fresh.initrd.write_bytes(b"tampered")  # a damaged build is not reused
    assert build_ramdisk(debs, tmp_path / "a").digest == cached.digest


def test_the_initrd_holds_init_tools_their_libraries_and_modules(tmp_path):
    files = cached_ramdisk()
    assert files.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # an x86 bzImage
    got = members(files.initrd)
    assert all(uid == 0 and mtime == 0 for _, uid, mtime, _ in got.values())
    mode, *_ = got["init"]
    assert stat.S_ISREG(mode) and mode & 0o111
    assert stat.S_ISCHR(got["dev/console"][0])
    for tool in ("curl", "jq", "stress-ng", "fio", "smartctl", "wipefs", "nvme", "kmod"):
        assert f"usr/bin/{tool}" in got, tool
    # Every library any binary there needs is there too (the loader finds them in LIB_DIR).
    for name, (mode, _, _, data) in got.items():
        if stat.S_ISREG(mode) and data[:4] == b"\x7fELF":
            probe = tmp_path / "probe"
            probe.write_bytes(data)
            for soname in elf.dynamic(probe)[0]:
                assert f"{LIB_DIR}/{soname}" in got, (name, soname)
    deps = [n for n in got if n.endswith("/modules.dep")]
    assert len(deps) == 1
    dep = got[deps[0]][3].decode()
    for module in ("virtio_net.ko", "virtio_blk.ko", "nvme.ko", "nvme-core.ko"):
        assert f"/{module}:" in dep, module
    assert got["etc/aiorch/modules"][3].decode().split()[:3] == ["virtio_pci", "virtio_net",
                                                                   "virtio_blk"]  # fmt: skip
    assert "etc/aiorch/ca.pem" not in got


def test_with_ca_is_a_second_initrd_holding_only_the_ca(tmp_path):
    files = cached_ramdisk()
    ca = with_ca(files, CA, tmp_path)
    got = members(ca)
    assert set(got) == {"etc", "etc/aiorch", "etc/aiorch/ca.pem"}
    assert got["etc/aiorch/ca.pem"][3] == CA
    assert with_ca(files, CA, tmp_path) == ca
    assert ca.read_bytes() == with_ca(files, CA, tmp_path / "b").read_bytes()
    both = tmp_path / "both.img"  # what the kernel unpacks when the hub serves both
    both.write_bytes(files.initrd.read_bytes() + ca.read_bytes())
    merged = members(both)
    assert merged["etc/aiorch/ca.pem"][3] == CA and "init" in merged
    with pytest.raises(RamdiskError, match="not a PEM certificate"):
        with_ca(files, b"not a cert", tmp_path)


def test_debs_without_a_kernel_or_tools_are_one_line_errors(debs, tmp_path):
    no_kernel, kernel_only = tmp_path / "no-kernel", tmp_path / "kernel-only"
    no_kernel.mkdir()
    kernel_only.mkdir()
    for deb in debs.glob("*.deb"):
        target = kernel_only if deb.name.startswith("linux-image-") else no_kernel
        os.symlink(deb, target / deb.name)
    cases = [
        (tmp_path / "nowhere", "is not a directory of debs"),
        (no_kernel, "has no Debian kernel (linux-image-<version>-amd64_*.deb)"),
        (kernel_only, "lacks busybox, curl, fio"),
    ]
    for where, words in cases:
        with pytest.raises(RamdiskError) as caught:
            build_ramdisk(where, tmp_path / "out")
        message = str(caught.value)
        assert words in message and "\n" not in message, message
    assert not (tmp_path / "out" / "initrd.img").exists()
