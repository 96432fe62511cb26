"""Host load through psutil: CPU, memory, load averages, filesystems and disk IO."""

from __future__ import annotations

import os

import psutil

from edge_agent.outbox import Sample

# Loop and RAM block devices are images and caches, not disks anyone provisions.
_SKIPPED_DISKS = ("loop", "ram", "zram")


class HostCollector:
    name = "host"

    def __init__(self) -> None:
        # cpu_percent(None) measures since the previous call; the first call has none.
        psutil.cpu_percent(interval=None)

    def collect(self, now: float) -> list[Sample]:
        mem = psutil.virtual_memory()
        load1, load5, load15 = os.getloadavg()
        samples: list[Sample] = [
            (now, "host_cpu_utilization_percent", psutil.cpu_percent(interval=None), {}),
            (now, "host_memory_used_bytes", float(mem.total - mem.available), {}),
            (now, "host_memory_total_bytes", float(mem.total), {}),
            (now, "host_load1", load1, {}),
            (now, "host_load5", load5, {}),
            (now, "host_load15", load15, {}),
        ]
        return samples + _filesystems(now) + _disk_io(now)

    def close(self) -> None:
        return None  # holds nothing


def _filesystems(now: float) -> list[Sample]:
    samples: list[Sample] = []
    for part in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:  # unmounted meanwhile, or not ours to read
            continue
        labels = {"mountpoint": part.mountpoint, "device": part.device, "fstype": part.fstype}
        samples.append((now, "host_filesystem_used_bytes", float(usage.used), labels))
        samples.append((now, "host_filesystem_size_bytes", float(usage.total), labels))
    return samples


def _disk_io(now: float) -> list[Sample]:
    samples: list[Sample] = []
    for disk, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
        if disk.startswith(_SKIPPED_DISKS):
            continue
        labels = {"disk": disk}
        samples.append((now, "host_disk_read_bytes_total", float(io.read_bytes), labels))
        samples.append((now, "host_disk_written_bytes_total", float(io.write_bytes), labels))
    return samples
