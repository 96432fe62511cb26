"""Benchmark: `lab up --hosts 10` from the cached base image, and memory per idle host.

Baseline measured in the same run: `lab up --hosts 1`. Goals: 10 hosts up in
under 60 s, under 60 MB per idle host. Run as root: `.venv/bin/python
benchmarks/bench_lab_up.py`. Every lab it makes is removed before it exits.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
import uuid

from aiorch.lab import Lab
from aiorch.lab.image import ensure_image
from aiorch.lab.podman import podman

GOAL_UP_S = 60.0
GOAL_MB_PER_HOST = 60.0
SI = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def timed_up(hosts: int) -> tuple[Lab, float]:
    lab = Lab(f"bench{hosts}-{uuid.uuid4().hex[:6]}")
    start = time.monotonic()
    try:
        lab.up(hosts=hosts)
    except BaseException:
        lab.down()
        raise
    return lab, time.monotonic() - start


def memory_mb(lab: Lab) -> list[float]:
    """Per-host memory from `podman stats` (cgroup usage less inactive page cache), in MB."""
    names = [h.container for h in lab.hosts]
    out = podman("stats", "--no-stream", "--format", "{{.MemUsage}}", *names).stdout
    sizes = []
    for line in out.splitlines():
        match = re.match(r"([\d.]+)([kMG]?B)", line.strip())
        if match is None:
            raise RuntimeError(f"unexpected podman stats line: {line!r}")
        sizes.append(float(match[1]) * SI[match[2]] / 1e6)
    return sizes


def main() -> int:
    start = time.monotonic()
    ensure_image()
    print(f"base image ready in {time.monotonic() - start:.1f} s (0 when cached)")

    one, one_s = timed_up(1)
    one.down()
    ten, ten_s = timed_up(10)
    try:
        per_host = memory_mb(ten)
    finally:
        down_start = time.monotonic()
        ten.down()
        down_s = time.monotonic() - down_start

    mean_mb = statistics.mean(per_host)
    print(f"lab up --hosts 1  : {one_s:6.1f} s   (baseline)")
    ratio = ten_s / one_s
    print(f"lab up --hosts 10 : {ten_s:6.1f} s   ratio {ratio:.1f}x   goal < {GOAL_UP_S:.0f} s")
    print(
        f"memory per idle host: mean {mean_mb:.1f} MB, max {max(per_host):.1f} MB "
        f"over {len(per_host)} hosts   goal < {GOAL_MB_PER_HOST:.0f} MB"
    )
    print(f"lab down (10 hosts): {down_s:.1f} s")
    ok = ten_s < GOAL_UP_S and max(per_host) < GOAL_MB_PER_HOST
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
