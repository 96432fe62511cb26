"""GPU readings, XID errors and unsupported fields as samples. Every sample carries
`simulated`, so data from a simulated backend can never pass for a real GPU's."""

from __future__ import annotations

from collections import Counter

from edge_agent.contract.telemetry import GPU_UTILIZATION, SIMULATED_LABEL
from edge_agent.gpu import GpuBackend, GpuInfo, GpuSample, SimulatedBackend
from edge_agent.outbox import Sample

Metric = tuple[str, float, dict[str, str]]  # (name, factor to the name's unit, extra labels)


def _ecc(counter: str, kind: str) -> Metric:
    return ("gpu_ecc_errors_total", 1, {"counter": counter, "type": kind})


# GpuSample.metrics key -> metric
METRICS: dict[str, Metric] = {
    "utilization_gpu_pct": (GPU_UTILIZATION, 1, {}),
    "utilization_memory_pct": ("gpu_memory_utilization_percent", 1, {}),
    "memory_used_bytes": ("gpu_memory_used_bytes", 1, {}),
    "memory_total_bytes": ("gpu_memory_total_bytes", 1, {}),
    "temperature_c": ("gpu_temperature_celsius", 1, {}),
    "power_w": ("gpu_power_watts", 1, {}),
    "sm_clock_mhz": ("gpu_sm_clock_hertz", 1e6, {}),
    "performance_state": ("gpu_performance_state", 1, {}),
    # A bitmask; edge_agent.gpu.reason_names() spells it out.
    "clocks_event_reasons": ("gpu_clocks_event_reasons", 1, {}),
    "ecc_volatile_corrected": _ecc("volatile", "corrected"),
    "ecc_volatile_uncorrected": _ecc("volatile", "uncorrected"),
    "ecc_aggregate_corrected": _ecc("aggregate", "corrected"),
    "ecc_aggregate_uncorrected": _ecc("aggregate", "uncorrected"),
    "remapped_rows_correctable": ("gpu_remapped_rows", 1, {"type": "correctable"}),
    "remapped_rows_uncorrectable": ("gpu_remapped_rows", 1, {"type": "uncorrectable"}),
    "remapped_rows_pending": ("gpu_remapped_rows_pending", 1, {}),
    "remapped_rows_failure": ("gpu_remapped_rows_failure", 1, {}),
    "energy_mj": ("gpu_energy_joules_total", 1e-3, {}),
    # NVML's KB is 1024 bytes.
    "pcie_tx_kb_s": ("gpu_pcie_transmit_bytes_per_second", 1024, {}),
    "pcie_rx_kb_s": ("gpu_pcie_receive_bytes_per_second", 1024, {}),
}
# Keys that are not a number: the process list becomes a count, the reason names repeat the mask.
PROCESSES = "processes"
REDUNDANT = frozenset({"clocks_event_reason_names"})


class GpuCollector:
    name = "gpu"

    def __init__(self, backend: GpuBackend) -> None:
        self.backend = backend
        self._gpus: dict[int, GpuInfo] | None = None
        self._xids: Counter[tuple[int, str, int]] = Counter()  # (index, uuid, xid) -> seen
        self._unsupported_reported: set[tuple[int, str]] = set()

    def collect(self, now: float) -> list[Sample]:
        """Slow fields come at the backend's slower cadence; XIDs as running counts when they
        happen; each unsupported field once per GPU for the life of the process."""
        samples: list[Sample] = []
        for record in self.backend.sample():
            samples += self._readings(record)
        for event in self.backend.events():
            self._xids[event.index, event.uuid, event.xid] += 1
            labels = {
                **self._labels(event.index, event.uuid, event.simulated),
                "xid": str(event.xid),
            }
            count = self._xids[event.index, event.uuid, event.xid]
            samples.append((event.timestamp, "gpu_xid_errors_total", float(count), labels))
        for index, fields in self.backend.unsupported_fields().items():
            for field in fields:
                if (index, field) not in self._unsupported_reported:
                    self._unsupported_reported.add((index, field))
                    labels = {**self._inventory_labels(index), "field": field}
                    samples.append((now, "gpu_field_unsupported", 1.0, labels))
        return samples

    def close(self) -> None:
        return None  # the agent owns (and closes) the backend

    def _readings(self, record: GpuSample) -> list[Sample]:
        base = self._labels(record.index, record.uuid, record.simulated)
        ts = record.timestamp
        samples: list[Sample] = []
        for key, value in record.metrics.items():
            if key == PROCESSES:
                samples.append((ts, "gpu_processes", float(len(value)), base))
            elif key in METRICS:
                metric, factor, extra = METRICS[key]
                samples.append((ts, metric, float(value) * factor, {**base, **extra}))
        for field in record.errors:
            samples.append((ts, "gpu_field_read_failed", 1.0, {**base, "field": field}))
        return samples

    def _labels(self, index: int, uuid: str, simulated: bool) -> dict[str, str]:
        info = self._inventory().get(index)
        product = info.name if info else "unknown"
        return {
            "gpu": str(index),
            "uuid": uuid,
            "product": product,
            SIMULATED_LABEL: _flag(simulated),
        }

    def _inventory_labels(self, index: int) -> dict[str, str]:
        info = self._inventory().get(index)
        if info is None:
            return self._labels(index, "", isinstance(self.backend, SimulatedBackend))
        return self._labels(index, info.uuid, info.simulated)

    def _inventory(self) -> dict[int, GpuInfo]:
        """The GPUs' static facts, read once: they change only with a driver reload."""
        if self._gpus is None:
            self._gpus = {gpu.index: gpu for gpu in self.backend.inventory()}
        return self._gpus


def _flag(value: bool) -> str:
    return "true" if value else "false"
