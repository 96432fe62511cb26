"""GPU inventory, telemetry and XID events for the edge agent.

Only the standard library and pynvml are used: the agent must run on hosts with
no NVIDIA driver at all (pynvml loads only when an NvmlBackend is built), and
benchmarks/gpu_check.py loads this package with a GPU machine's bare python3.

Backends:
  NvmlBackend       the real path, through NVML (never nvidia-smi);
  SimulatedBackend  named fake fleets for demos and tests, always marked simulated;
  NullBackend       GPU monitoring switched off.
"""

from __future__ import annotations

from edge_agent.gpu.base import (
    DEFAULT_EXPENSIVE_EVERY,
    GpuBackend,
    GpuInfo,
    GpuSample,
    NullBackend,
    XidEvent,
    reason_names,
)
from edge_agent.gpu.nvml import (
    FIELDS,
    INVENTORY_FIELDS,
    MAX_QUEUED_EVENTS,
    Field,
    NvmlBackend,
    Reader,
    cuda_version_string,
)
from edge_agent.gpu.simulated import PROFILES, SimProfile, SimulatedBackend

__all__ = [
    "DEFAULT_EXPENSIVE_EVERY",
    "FIELDS",
    "INVENTORY_FIELDS",
    "MAX_QUEUED_EVENTS",
    "PROFILES",
    "Field",
    "GpuBackend",
    "GpuInfo",
    "GpuSample",
    "NullBackend",
    "NvmlBackend",
    "Reader",
    "SimProfile",
    "SimulatedBackend",
    "XidEvent",
    "cuda_version_string",
    "open_gpu_backend",
    "reason_names",
]


def open_gpu_backend(spec: str) -> GpuBackend:
    """Builds the backend named by the agent's `gpu_backend` setting:
    `nvml`, `simulated:<profile>` or `none`."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "nvml" and not arg:
        return NvmlBackend()
    if kind == "none" and not arg:
        return NullBackend()
    if kind == "simulated":
        return SimulatedBackend(arg)
    raise ValueError(
        f"gpu_backend {spec!r}: expected nvml, none or simulated:<profile> "
        f"(profiles: {', '.join(PROFILES)})"
    )
