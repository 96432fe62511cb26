"""GPUs through NVML (never nvidia-smi): the field table, its readers, and the
XID event watcher. pynvml is imported only when an NvmlBackend is built."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.gpu.base import (
    DEFAULT_EXPENSIVE_EVERY,
    GpuBackend,
    GpuInfo,
    GpuSample,
    XidEvent,
    reason_names,
)

log = logging.getLogger(__name__)

# XIDs are rare; this bounds memory if nobody drains the queue.
MAX_QUEUED_EVENTS = 1024


Reader = Callable[[Any, Any], dict[str, Any]]


@dataclass(frozen=True)
class Field:
    """One NVML query. `name` is what unsupported_fields() reports; `read(nvml, handle)`
    returns the metrics it yields."""

    name: str
    read: Reader
    expensive: bool = False


def _utilization(nvml: Any, handle: Any) -> dict[str, Any]:
    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
    return {"utilization_gpu_pct": rates.gpu, "utilization_memory_pct": rates.memory}


def _memory(nvml: Any, handle: Any) -> dict[str, Any]:
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    return {"memory_used_bytes": mem.used, "memory_total_bytes": mem.total}


def _temperature(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)}


def _power(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000}


def _sm_clock(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"sm_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)}


def _performance_state(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"performance_state": nvml.nvmlDeviceGetPerformanceState(handle)}


def _clocks_event_reasons(nvml: Any, handle: Any) -> dict[str, Any]:
    # nvidia-ml-py 12.535+ calls throttle reasons "clocks event reasons"; older ones don't.
    read = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    mask = (read or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)(handle)
    return {"clocks_event_reasons": mask, "clocks_event_reason_names": reason_names(mask)}


def _ecc_reader(counter: str) -> Reader:
    """Corrected and uncorrected ECC totals for one counter (volatile or aggregate)."""

    def read(nvml: Any, handle: Any) -> dict[str, Any]:
        counter_type = getattr(nvml, f"NVML_{counter.upper()}_ECC")
        return {
            f"ecc_{counter}_{kind}": nvml.nvmlDeviceGetTotalEccErrors(
                handle, getattr(nvml, f"NVML_MEMORY_ERROR_TYPE_{kind.upper()}"), counter_type
            )
            for kind in ("corrected", "uncorrected")
        }

    return read


def _remapped_rows(nvml: Any, handle: Any) -> dict[str, Any]:
    correctable, uncorrectable, pending, failure = nvml.nvmlDeviceGetRemappedRows(handle)
    return {
        "remapped_rows_correctable": correctable,
        "remapped_rows_uncorrectable": uncorrectable,
        "remapped_rows_pending": bool(pending),
        "remapped_rows_failure": bool(failure),
    }


def _processes(nvml: Any, handle: Any) -> dict[str, Any]:
    procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    return {"processes": [{"pid": p.pid, "used_memory_bytes": p.usedGpuMemory} for p in procs]}


def _energy(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"energy_mj": nvml.nvmlDeviceGetTotalEnergyConsumption(handle)}


def _pcie_throughput(nvml: Any, handle: Any) -> dict[str, Any]:
    # NVML samples each direction over ~20 ms, hence the slow cadence.
    return {
        "pcie_tx_kb_s": nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_TX_BYTES),
        "pcie_rx_kb_s": nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_RX_BYTES),
    }


FIELDS: tuple[Field, ...] = (
    Field("utilization", _utilization),
    Field("memory", _memory),
    Field("temperature", _temperature),
    Field("power", _power),
    Field("sm_clock", _sm_clock),
    Field("performance_state", _performance_state),
    Field("clocks_event_reasons", _clocks_event_reasons),
    Field("ecc_volatile", _ecc_reader("volatile")),
    Field("ecc_aggregate", _ecc_reader("aggregate")),
    Field("remapped_rows", _remapped_rows),
    Field("processes", _processes),
    Field("energy", _energy, expensive=True),
    Field("pcie_throughput", _pcie_throughput, expensive=True),
)


def _name(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"name": nvml.nvmlDeviceGetName(handle)}


def _memory_total(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"memory_total_bytes": nvml.nvmlDeviceGetMemoryInfo(handle).total}


def _pci_bus_id(nvml: Any, handle: Any) -> dict[str, Any]:
    return {"pci_bus_id": nvml.nvmlDeviceGetPciInfo(handle).busId}


def _mig_mode(nvml: Any, handle: Any) -> dict[str, Any]:
    current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    return {"mig_mode": "enabled" if current == nvml.NVML_DEVICE_MIG_ENABLE else "disabled"}


INVENTORY_FIELDS: tuple[Field, ...] = (
    Field("name", _name),
    Field("memory_total", _memory_total),
    Field("pci_bus_id", _pci_bus_id),
    Field("mig_mode", _mig_mode),
)


def cuda_version_string(version: int) -> str:
    """NVML encodes CUDA 12.4 as 12040."""
    return f"{version // 1000}.{version % 1000 // 10}"


@dataclass(frozen=True)
class _Gpu:
    index: int
    uuid: str
    handle: Any


class NvmlBackend(GpuBackend):
    """GPUs through NVML. Initialises NVML once, caches device handles, and shuts
    NVML down on close(). A missing driver or library makes available() False.

    `nvml` is the pynvml module, imported only here (3.5 MB that hosts without NVIDIA GPUs
    need not carry); tests pass a stand-in with the same functions."""

    name = "nvml"

    def __init__(
        self,
        nvml: Any = None,
        *,
        expensive_every: int = DEFAULT_EXPENSIVE_EVERY,
        event_timeout_ms: int = 200,
    ) -> None:
        super().__init__(expensive_every)
        nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        self._nvml = nvml
        self._gpus: list[_Gpu] = []
        self._unsupported: dict[int, set[str]] = {}
        self._events: deque[XidEvent] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_set: Any = None
        self._initialised = False
        self.unavailable_reason: str | None = None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self.unavailable_reason = f"NVML unavailable: {exc}"
            log.info("no NVIDIA GPUs: %s", self.unavailable_reason)
            return
        self._initialised = True
        self._open_devices()
        if not self._gpus:
            self.unavailable_reason = self.unavailable_reason or "NVML reports no GPUs"
            return
        self._start_xid_watch(event_timeout_ms)

    def _open_devices(self) -> None:
        nvml = self._nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self.unavailable_reason = f"cannot count GPUs: {exc}"
            return
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                gpu_uuid = nvml.nvmlDeviceGetUUID(handle)
            except nvml.NVMLError as exc:
                log.warning("GPU %d skipped: %s", index, exc)
                continue
            self._gpus.append(_Gpu(index, gpu_uuid, handle))
            self._unsupported[index] = set()

    def available(self) -> bool:
        return bool(self._gpus)

    def inventory(self) -> list[GpuInfo]:
        if not self._gpus:
            return []
        driver, cuda = self._system_versions()
        result = []
        for gpu in self._gpus:
            values: dict[str, Any] = {}
            for f in INVENTORY_FIELDS:
                values.update(self._read(gpu, f, {}))
            result.append(
                GpuInfo(
                    index=gpu.index,
                    uuid=gpu.uuid,
                    name=values.get("name", "unknown"),
                    memory_total_bytes=values.get("memory_total_bytes", 0),
                    driver_version=driver,
                    cuda_driver_version=cuda,
                    pci_bus_id=values.get("pci_bus_id", ""),
                    mig_mode=values.get("mig_mode"),
                    simulated=False,
                )
            )
        return result

    def _system_versions(self) -> tuple[str, str]:
        nvml = self._nvml
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
            cuda = cuda_version_string(nvml.nvmlSystemGetCudaDriverVersion())
        except nvml.NVMLError as exc:
            log.warning("cannot read driver versions: %s", exc)
            return "unknown", "unknown"
        return driver, cuda

    def _sample(self, expensive: bool) -> list[GpuSample]:
        samples = []
        for gpu in self._gpus:
            metrics: dict[str, Any] = {}
            errors: dict[str, str] = {}
            for f in FIELDS:
                if expensive or not f.expensive:
                    metrics.update(self._read(gpu, f, errors))
            samples.append(
                GpuSample(gpu.index, gpu.uuid, time.time(), expensive, metrics, False, errors)
            )
        return samples

    def _read(self, gpu: _Gpu, f: Field, errors: dict[str, str]) -> dict[str, Any]:
        """Runs one query. NotSupported (or a function missing from an old driver) is
        logged once and remembered so the query is never made again; other NVML
        errors are reported in `errors` and retried next time."""
        nvml = self._nvml
        if f.name in self._unsupported[gpu.index]:
            return {}
        try:
            return f.read(nvml, gpu.handle)
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound) as exc:
            self._unsupported[gpu.index].add(f.name)
            log.info("GPU %d: %s not supported (%s); not queried again", gpu.index, f.name, exc)
        except nvml.NVMLError as exc:
            errors[f.name] = str(exc)
        return {}

    def unsupported_fields(self) -> dict[int, list[str]]:
        return {index: sorted(names) for index, names in self._unsupported.items()}

    def _start_xid_watch(self, timeout_ms: int) -> None:
        """Registers every GPU for XID critical errors and waits on them in a daemon
        thread: NVML delivers the event, nothing is polled."""
        nvml = self._nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.info("XID events unavailable: %s", exc)
            return
        registered = 0
        for gpu in self._gpus:
            try:
                nvml.nvmlDeviceRegisterEvents(
                    gpu.handle, nvml.nvmlEventTypeXidCriticalError, event_set
                )
                registered += 1
            except nvml.NVMLError as exc:
                log.info("GPU %d: XID events unavailable: %s", gpu.index, exc)
        if not registered:
            nvml.nvmlEventSetFree(event_set)
            return
        self._event_set = event_set
        self._thread = threading.Thread(
            target=self._watch_xids, args=(timeout_ms,), name="nvml-xid", daemon=True
        )
        self._thread.start()

    def _watch_xids(self, timeout_ms: int) -> None:
        nvml = self._nvml
        while not self._stop.is_set():
            try:
                data = nvml.nvmlEventSetWait(self._event_set, timeout_ms)
            except nvml.NVMLError_Timeout:
                continue
            except nvml.NVMLError as exc:
                log.warning("XID wait failed: %s", exc)
                self._stop.wait(1.0)  # back off instead of spinning on a broken driver
                continue
            event = self._xid_event(data.device, int(data.eventData))
            log.error("GPU %d (%s): XID %d", event.index, event.uuid, event.xid)
            self._events.append(event)

    def _xid_event(self, handle: Any, xid: int) -> XidEvent:
        """Names the GPU by UUID; a GPU too broken to answer still gets its event."""
        try:
            gpu_uuid = self._nvml.nvmlDeviceGetUUID(handle)
        except self._nvml.NVMLError:
            gpu_uuid = ""
        index = next((gpu.index for gpu in self._gpus if gpu.uuid == gpu_uuid), -1)
        return XidEvent(index, gpu_uuid, xid, time.time(), simulated=False)

    def events(self) -> list[XidEvent]:
        drained = []
        while self._events:
            drained.append(self._events.popleft())
        return drained

    @property
    def events_active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        if not self._initialised:
            return
        nvml = self._nvml
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                # Freeing the set under a waiting thread would crash; leave it to exit.
                log.warning("XID thread did not stop; NVML left initialised")
                return
        try:
            if self._event_set is not None:
                nvml.nvmlEventSetFree(self._event_set)
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.warning("NVML shutdown: %s", exc)
        self._initialised = False
        self._gpus = []
        self._event_set = None
