"""What the acceptance checks read beyond the agent's GPU backends (ECC mode, the PCIe link,
retired pages, the board serial), one Probe per backend. A reading the GPU does not have raises
NotApplicable, any other failure Unreadable, so that no check passes by a crash."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.gpu import open_gpu_backend
from edge_agent.gpu.base import GpuBackend, GpuInfo
from edge_agent.gpu.nvml import NvmlBackend


class NotApplicable(Exception):
    """The GPU has no such reading (NVML NotSupported): the check does not apply."""


class Unreadable(Exception):
    """The reading failed for another reason: the check fails."""


@dataclass(frozen=True)
class PcieLink:
    """Widths in lanes; `max_*` is what this GPU in this slot can train at, `gpu_max_gen`
    what the GPU alone supports (a Gen5 card in a Gen4 slot: max_gen 4, gpu_max_gen 5)."""

    width: int
    max_width: int
    gen: int
    max_gen: int
    gpu_max_gen: int


class Probe:
    """The acceptance readings the backend does not carry; this base reads none."""

    def __init__(self, backend: GpuBackend) -> None:
        self.backend = backend

    def serial(self, gpu: GpuInfo) -> str:
        return ""

    def ecc_mode(self, gpu: GpuInfo) -> tuple[bool, bool]:
        """(enabled now, enabled after the next reset)."""
        raise NotApplicable(f"the {self.backend.name} backend reads no ECC mode")

    def pcie(self, gpu: GpuInfo) -> PcieLink:
        raise NotApplicable(f"the {self.backend.name} backend reads no PCIe link")

    def retired_pages(self, gpu: GpuInfo) -> tuple[int, bool]:
        """(pages retired for double-bit errors, a retirement pending a reset)."""
        raise NotApplicable(f"the {self.backend.name} backend reads no retired pages")


class NvmlProbe(Probe):
    """Reads through NVML, which the NvmlBackend has initialised (NVML counts its inits)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        super().__init__(NvmlBackend(self._nvml))

    def _call(self, gpu: GpuInfo, read: Callable[[Any, Any], Any]) -> Any:
        nvml = self._nvml
        try:
            return read(nvml, nvml.nvmlDeviceGetHandleByUUID(gpu.uuid))
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound) as exc:
            raise NotApplicable(f"NVML: {exc}") from None
        except nvml.NVMLError as exc:
            raise Unreadable(f"NVML: {exc}") from None

    def serial(self, gpu: GpuInfo) -> str:
        try:
            return str(self._call(gpu, lambda n, h: n.nvmlDeviceGetSerial(h)))
        except (NotApplicable, Unreadable):
            return ""  # consumer boards have none; the UUID still names the GPU

    def ecc_mode(self, gpu: GpuInfo) -> tuple[bool, bool]:
        current, pending = self._call(gpu, lambda n, h: n.nvmlDeviceGetEccMode(h))
        enabled = self._nvml.NVML_FEATURE_ENABLED
        return current == enabled, pending == enabled

    def pcie(self, gpu: GpuInfo) -> PcieLink:
        def read(n: Any, h: Any) -> PcieLink:
            max_gen = n.nvmlDeviceGetMaxPcieLinkGeneration(h)
            try:
                gpu_max_gen = n.nvmlDeviceGetGpuMaxPcieLinkGeneration(h)
            except (n.NVMLError_NotSupported, n.NVMLError_FunctionNotFound):
                gpu_max_gen = max_gen  # drivers before R470 know only the link's maximum
            return PcieLink(
                width=n.nvmlDeviceGetCurrPcieLinkWidth(h),
                max_width=n.nvmlDeviceGetMaxPcieLinkWidth(h),
                gen=n.nvmlDeviceGetCurrPcieLinkGeneration(h),
                max_gen=max_gen,
                gpu_max_gen=gpu_max_gen,
            )

        return self._call(gpu, read)

    def retired_pages(self, gpu: GpuInfo) -> tuple[int, bool]:
        def read(n: Any, h: Any) -> tuple[int, bool]:
            pending = n.nvmlDeviceGetRetiredPagesPendingStatus(h)
            pages = n.nvmlDeviceGetRetiredPages(
                h, n.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
            )
            return len(pages), pending == n.NVML_FEATURE_ENABLED

        return self._call(gpu, read)


class SimulatedProbe(Probe):
    """Healthy readings for a simulated fleet: Hopper links at Gen5 x16, others at Gen4 x16,
    ECC on, and retired pages not applicable (as on every GPU since Ampere, which remaps rows)."""

    def serial(self, gpu: GpuInfo) -> str:
        return f"SIM{gpu.index:010d}"

    def ecc_mode(self, gpu: GpuInfo) -> tuple[bool, bool]:
        return True, True

    def pcie(self, gpu: GpuInfo) -> PcieLink:
        gen = 5 if any(m in gpu.name for m in ("H100", "H200")) else 4
        return PcieLink(width=16, max_width=16, gen=gen, max_gen=gen, gpu_max_gen=gen)

    def retired_pages(self, gpu: GpuInfo) -> tuple[int, bool]:
        raise NotApplicable("simulated: Not Supported (rows are remapped instead)")


def open_probe(spec: str) -> Probe:
    """The probe for an agent `gpu_backend` setting: nvml, simulated:<profile> or none."""
    if spec.strip() == "nvml":
        return NvmlProbe()
    backend = open_gpu_backend(spec)
    return SimulatedProbe(backend) if spec.strip().startswith("simulated") else Probe(backend)
