"""Simulated GPU fleets for demos and tests, so the agent and hub can run end to
end with no GPU; every record is marked simulated so none passes for real."""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from edge_agent.gpu.base import (
    DEFAULT_EXPENSIVE_EVERY,
    GpuBackend,
    GpuInfo,
    GpuSample,
    reason_names,
)


@dataclass(frozen=True)
class SimProfile:
    """A fake fleet: `count` identical GPUs and the fields they cannot report."""

    count: int
    name: str
    memory_mib: int
    idle_w: float
    max_w: float
    unsupported: tuple[str, ...] = ()


PROFILES: dict[str, SimProfile] = {
    "8xH100-80GB": SimProfile(8, "NVIDIA H100 80GB HBM3", 81559, 70, 700),
    "4xH100-80GB": SimProfile(4, "NVIDIA H100 80GB HBM3", 81559, 70, 700),
    "1xH200-141GB": SimProfile(1, "NVIDIA H200", 143771, 75, 700),
    "4xA100-40GB": SimProfile(4, "NVIDIA A100-SXM4-40GB", 40960, 55, 400),
    # Ada cards have neither MIG nor row remapping.
    "1xL4-24GB": SimProfile(1, "NVIDIA L4", 23034, 16, 72, ("mig_mode", "remapped_rows")),
    "none": SimProfile(0, "", 0, 0, 0),
}

_SIM_DRIVER = "580.95.05"
_SIM_CUDA = "13.0"
_SIM_PERIOD_S = 5.0  # nominal sampling period used to integrate simulated energy


class SimulatedBackend(GpuBackend):
    """Plausible readings for a named profile, reproducible for a given profile and
    sample number. Every record says simulated=True so no report passes for real."""

    def __init__(self, profile: str, *, expensive_every: int = DEFAULT_EXPENSIVE_EVERY) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown GPU profile {profile!r}; known: {', '.join(PROFILES)}")
        super().__init__(expensive_every)
        self.name = f"simulated:{profile}"
        self._profile = PROFILES[profile]
        self._rng = random.Random(profile)
        self._tick = 0
        self._uuids = [
            f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'aiorch-sim/{profile}/{i}')}"
            for i in range(self._profile.count)
        ]
        self._energy_mj = [0.0] * self._profile.count

    def available(self) -> bool:
        return self._profile.count > 0

    def inventory(self) -> list[GpuInfo]:
        p = self._profile
        return [
            GpuInfo(
                index=i,
                uuid=self._uuids[i],
                name=p.name,
                memory_total_bytes=p.memory_mib << 20,
                driver_version=_SIM_DRIVER,
                cuda_driver_version=_SIM_CUDA,
                pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0",
                mig_mode=None if "mig_mode" in p.unsupported else "disabled",
                simulated=True,
            )
            for i in range(p.count)
        ]

    def unsupported_fields(self) -> dict[int, list[str]]:
        return {i: sorted(self._profile.unsupported) for i in range(self._profile.count)}

    def _sample(self, expensive: bool) -> list[GpuSample]:
        now = time.time()
        samples = [self._one(i, now, expensive) for i in range(self._profile.count)]
        self._tick += 1
        return samples

    def _one(self, index: int, now: float, expensive: bool) -> GpuSample:
        p = self._profile
        # A slow wave per GPU, phase-shifted so GPUs differ, with a little noise.
        wave = 0.5 + 0.5 * math.sin(self._tick / 8 + index * 0.7)
        load = min(1.0, max(0.0, wave + self._rng.uniform(-0.05, 0.05)))
        power_w = round(p.idle_w + (p.max_w - p.idle_w) * load, 1)
        self._energy_mj[index] += power_w * 1000 * _SIM_PERIOD_S
        total = p.memory_mib << 20
        reasons = 0x1 if load < 0.05 else 0x4 if load > 0.95 else 0x0
        metrics: dict[str, Any] = {
            "utilization_gpu_pct": round(100 * load),
            "utilization_memory_pct": round(60 * load),
            "memory_used_bytes": int(total * (0.02 + 0.9 * load)),
            "memory_total_bytes": total,
            "temperature_c": round(32 + 45 * load),
            "power_w": power_w,
            "sm_clock_mhz": round(345 + (1980 - 345) * load),
            "performance_state": 0 if load > 0.05 else 8,
            "clocks_event_reasons": reasons,
            "clocks_event_reason_names": reason_names(reasons),
            "ecc_volatile_corrected": 0,
            "ecc_volatile_uncorrected": 0,
            "ecc_aggregate_corrected": 0,
            "ecc_aggregate_uncorrected": 0,
            "processes": (
                [{"pid": 4000 + index, "used_memory_bytes": int(total * 0.9 * load)}]
                if load > 0.05
                else []
            ),
        }
        if "remapped_rows" not in p.unsupported:
            metrics.update(
                remapped_rows_correctable=0,
                remapped_rows_uncorrectable=0,
                remapped_rows_pending=False,
                remapped_rows_failure=False,
            )
        if expensive:
            metrics.update(
                energy_mj=int(self._energy_mj[index]),
                pcie_tx_kb_s=round(2_000_000 * load),
                pcie_rx_kb_s=round(6_000_000 * load),
            )
        return GpuSample(index, self._uuids[index], now, expensive, metrics, True)
