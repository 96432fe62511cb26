"""The shared libraries an ELF file asks for (its DT_NEEDED entries), read from the file itself.

The ramdisk builder copies a binary with exactly the libraries it loads, found in the
extracted debs rather than on the build machine, so the ramdisk is what the debs say.
"""

from __future__ import annotations

import struct
from pathlib import Path

SHT_DYNAMIC = 6
DT_NEEDED = 1
DT_RPATH = 15
DT_RUNPATH = 29


def is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def dynamic(path: Path) -> tuple[list[str], list[str]]:
    """The sonames a 64-bit little-endian ELF needs, in its order, and the directories its
    RPATH/RUNPATH adds (absolute, $ORIGIN left as is); ([], []) for a static one."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    names: list[str] = []
    paths: list[str] = []
    for _, kind, _, _, offset, size, link, _, _, _ in sections:
        if kind != SHT_DYNAMIC:
            continue
        strtab = sections[link][4]
        for at in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, at)
            if tag == 0:
                break
            if tag in (DT_NEEDED, DT_RPATH, DT_RUNPATH):
                end = data.index(b"\0", strtab + value)
                text = data[strtab + value : end].decode()
                if tag == DT_NEEDED:
                    names.append(text)
                else:
                    paths += [p for p in text.split(":") if p]
    return names, paths
