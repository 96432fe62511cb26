"""edge_agent.gpu: simulated profiles, the factory, and the NVML backend's logic.

The NVML logic is driven through FakeNvml, a stand-in for the pynvml module that
keeps pynvml's real error classes and constants and only scripts the device
functions (each checked to exist in pynvml). Tests of the real driver path skip
themselves on a machine that has a GPU, and the reverse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from edge_agent.gpu import (
    FIELDS,
    PROFILES,
    NullBackend,
    NvmlBackend,
    SimulatedBackend,
    XidEvent,
    cuda_version_string,
    open_gpu_backend,
    reason_names,
)

REPO = Path(__file__).resolve().parents[1]
EXPENSIVE_KEYS = {"energy_mj", "pcie_tx_kb_s", "pcie_rx_kb_s"}
GIB = 1 << 30


class FakeNvml:
    """pynvml's interface with scripted devices. `raises` maps a function name to
    the NVML error it raises; `xids` are (gpu index, xid) pairs to deliver."""

    def __init__(
        self,
        gpus: int = 1,
        raises: dict[str, type[pynvml.NVMLError]] | None = None,
        xids: tuple[tuple[int, int], ...] = (),
    ) -> None:
        for name in dir(pynvml):
            if name.startswith(("NVML", "nvmlEventType")):
                setattr(self, name, getattr(pynvml, name))
        self.calls: Counter[str] = Counter()
        self.raises = raises or {}
        self.gpus = gpus
        self.pending_xids = deque(xids)
        self.xids_consumed = threading.Event()
        self.results: dict[str, Any] = {
            "nvmlInit": None,
            "nvmlShutdown": None,
            "nvmlDeviceGetCount": gpus,
            "nvmlDeviceGetHandleByIndex": lambda index: index,
            "nvmlDeviceGetUUID": lambda handle: f"GPU-fake-{handle}",
            "nvmlSystemGetDriverVersion": "580.159.04",
            "nvmlSystemGetCudaDriverVersion": 13000,
            "nvmlDeviceGetName": "NVIDIA H200",
            "nvmlDeviceGetMemoryInfo": SimpleNamespace(used=2 * GIB, total=141 * GIB),
            "nvmlDeviceGetPciInfo": lambda handle: SimpleNamespace(
                busId=f"00000000:{handle:02X}:00.0"
            ),
            "nvmlDeviceGetMigMode": [0, 0],
            "nvmlDeviceGetUtilizationRates": SimpleNamespace(gpu=97, memory=40),
            "nvmlDeviceGetTemperature": 61,
            "nvmlDeviceGetPowerUsage": 612_345,
            "nvmlDeviceGetClockInfo": 1980,
            "nvmlDeviceGetPerformanceState": 0,
            "nvmlDeviceGetCurrentClocksEventReasons": 0x4,
            "nvmlDeviceGetTotalEccErrors": 0,
            "nvmlDeviceGetRemappedRows": (0, 0, 0, 0),
            "nvmlDeviceGetComputeRunningProcesses": [SimpleNamespace(pid=42, usedGpuMemory=GIB)],
            "nvmlDeviceGetTotalEnergyConsumption": 123_456,
            "nvmlDeviceGetPcieThroughput": 1000,
            "nvmlEventSetCreate": "event-set",
            "nvmlDeviceRegisterEvents": None,
            "nvmlEventSetWait": self._wait,
            "nvmlEventSetFree": None,
        }

    def __getattr__(self, name: str) -> Any:
        if name not in self.__dict__.get("results", {}):
            raise AttributeError(name)
        result = self.results[name]

        def call(*args: Any) -> Any:
            self.calls[name] += 1
            if name in self.raises:
                raise self.raises[name]()
            return result(args[0]) if callable(result) else result

        return call

    def _wait(self, event_set: Any) -> Any:
        """Like nvmlEventSetWait: an event if one is queued, else Timeout after a wait."""
        if self.pending_xids:
            index, xid = self.pending_xids.popleft()
            return SimpleNamespace(
                device=index, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=xid
            )
        self.xids_consumed.set()  # the loop came back: earlier events are queued
        time.sleep(0.01)  # NVML blocks up to its timeout
        raise pynvml.NVMLError_Timeout()


def test_fake_only_scripts_functions_that_pynvml_has() -> None:
    missing = [name for name in FakeNvml().results if not hasattr(pynvml, name)]
    assert missing == []


def samples_of(backend: Any, count: int) -> list[Any]:
    return [backend.sample() for _ in range(count)]


# --- simulated backend -------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_simulated_profile_is_marked_plausible_and_serialisable(profile: str) -> None:
    backend = SimulatedBackend(profile)
    spec = PROFILES[profile]
    inventory = backend.inventory()
    samples = [gpu for batch in samples_of(backend, 20) for gpu in batch]

    assert backend.available() == (spec.count > 0)
    assert len(inventory) == spec.count
    assert len({gpu.uuid for gpu in inventory}) == spec.count
    assert all(gpu.simulated for gpu in inventory)
    assert all(s.simulated for s in samples)
    json.dumps([gpu.to_dict() for gpu in inventory] + [s.to_dict() for s in samples])
    for s in samples:
        m = s.metrics
        assert 0 <= m["utilization_gpu_pct"] <= 100
        assert 0 < m["memory_used_bytes"] <= m["memory_total_bytes"]
        assert spec.idle_w <= m["power_w"] <= spec.max_w


def test_simulated_readings_are_reproducible_and_differ_between_gpus() -> None:
    first, second = SimulatedBackend("8xH100-80GB"), SimulatedBackend("8xH100-80GB")
    runs = [[[s.metrics for s in batch] for batch in samples_of(b, 10)] for b in (first, second)]
    assert runs[0] == runs[1]
    assert len({m["utilization_gpu_pct"] for m in runs[0][0]}) > 1


def test_simulated_l4_reports_what_it_cannot_read() -> None:
    backend = SimulatedBackend("1xL4-24GB")
    (sample,) = backend.sample()
    assert backend.unsupported_fields() == {0: ["mig_mode", "remapped_rows"]}
    assert backend.inventory()[0].mig_mode is None
    assert not any(key.startswith("remapped_rows") for key in sample.metrics)


def test_simulated_and_nvml_samples_carry_the_same_metrics() -> None:
    (simulated,) = SimulatedBackend("1xH200-141GB").sample()
    (real,) = NvmlBackend(FakeNvml()).sample()
    assert simulated.metrics.keys() == real.metrics.keys()
    assert (simulated.simulated, real.simulated) == (True, False)


def test_simulated_energy_only_grows() -> None:
    backend = SimulatedBackend("1xH200-141GB", expensive_every=1)
    energy = [batch[0].metrics["energy_mj"] for batch in samples_of(backend, 5)]
    assert energy == sorted(energy) and energy[0] < energy[-1]


def test_unknown_profile_is_rejected() -> None:
    with pytest.raises(ValueError, match="8xH100-80GB"):
        SimulatedBackend("3xTPU")


# --- cadence -----------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimulatedBackend("1xH200-141GB", expensive_every=3),
        lambda: NvmlBackend(FakeNvml(), expensive_every=3),
    ],
    ids=["simulated", "nvml"],
)
def test_expensive_fields_are_read_on_first_and_every_nth_sample(make: Any) -> None:
    backend = make()
    batches = samples_of(backend, 7)
    expected = [True, False, False, True, False, False, True]
    assert [batch[0].expensive for batch in batches] == expected
    for batch in batches:
        keys = batch[0].metrics.keys()
        assert (keys >= EXPENSIVE_KEYS) if batch[0].expensive else not (EXPENSIVE_KEYS & keys)


def test_forced_sample_does_not_shift_the_cadence() -> None:
    fake = FakeNvml()
    backend = NvmlBackend(fake, expensive_every=2)
    assert backend.sample()[0].expensive
    assert not backend.sample(expensive=False)[0].expensive
    assert backend.sample(expensive=True)[0].expensive
    assert not backend.sample()[0].expensive
    assert backend.sample()[0].expensive
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 3


def test_slow_queries_run_once_per_cadence_period() -> None:
    fake = FakeNvml()
    samples_of(NvmlBackend(fake, expensive_every=10), 10)
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 10
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1
    assert fake.calls["nvmlDeviceGetPcieThroughput"] == 2  # tx and rx
    assert [f.name for f in FIELDS if f.expensive] == ["energy", "pcie_throughput"]


# --- NVML backend logic (FakeNvml) ---------------------------------------------


def test_nvml_inventory_and_sample_values() -> None:
    backend = NvmlBackend(FakeNvml(gpus=2))
    inventory = backend.inventory()
    (first, _second) = backend.sample()

    assert [gpu.to_dict() for gpu in inventory][1] == {
        "index": 1,
        "uuid": "GPU-fake-1",
        "name": "NVIDIA H200",
        "memory_total_bytes": 141 * GIB,
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
        "pci_bus_id": "00000000:01:00.0",
        "mig_mode": "disabled",
        "simulated": False,
    }
    assert first.metrics["power_w"] == pytest.approx(612.345)
    assert first.metrics["clocks_event_reason_names"] == ["SwPowerCap"]
    assert first.metrics["processes"] == [{"pid": 42, "used_memory_bytes": GIB}]
    assert first.metrics["ecc_aggregate_uncorrected"] == 0
    assert first.errors == {}
    json.dumps([s.to_dict() for s in backend.sample()])


@pytest.mark.parametrize(
    "error", [pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound]
)
def test_unsupported_field_is_skipped_remembered_and_never_called_again(
    error: type[pynvml.NVMLError],
) -> None:
    fake = FakeNvml(
        gpus=2, raises={"nvmlDeviceGetRemappedRows": error, "nvmlDeviceGetMigMode": error}
    )
    backend = NvmlBackend(fake)
    inventory = backend.inventory() + backend.inventory()
    batches = samples_of(backend, 4)

    assert fake.calls["nvmlDeviceGetRemappedRows"] == 2  # once per GPU
    assert fake.calls["nvmlDeviceGetMigMode"] == 2
    assert backend.unsupported_fields() == {
        0: ["mig_mode", "remapped_rows"],
        1: ["mig_mode", "remapped_rows"],
    }
    assert all(gpu.mig_mode is None for gpu in inventory)
    for s in (s for batch in batches for s in batch):
        assert "remapped_rows_pending" not in s.metrics
        assert s.metrics["temperature_c"] == 61
        assert s.errors == {}


def test_transient_error_is_reported_and_retried() -> None:
    fake = FakeNvml(raises={"nvmlDeviceGetTemperature": pynvml.NVMLError_Unknown})
    backend = NvmlBackend(fake)
    batches = samples_of(backend, 3)
    assert fake.calls["nvmlDeviceGetTemperature"] == 3
    assert backend.unsupported_fields() == {0: []}
    assert batches[-1][0].errors == {"temperature": "Unknown Error"}
    assert "temperature_c" not in batches[-1][0].metrics


def test_older_pynvml_throttle_reason_name_is_used() -> None:
    fake = FakeNvml()
    fake.results["nvmlDeviceGetCurrentClocksThrottleReasons"] = 0x41
    del fake.results["nvmlDeviceGetCurrentClocksEventReasons"]
    (sample,) = NvmlBackend(fake).sample()
    assert sample.metrics["clocks_event_reason_names"] == ["GpuIdle", "HwThermalSlowdown"]


def test_reason_names_match_pynvml_constants() -> None:
    prefix = "nvmlClocksThrottleReason"
    aliases = {"All", "None", "UserDefinedClocks"}  # UserDefinedClocks == ApplicationsClocksSetting
    constants = {
        name.removeprefix(prefix): getattr(pynvml, name)
        for name in dir(pynvml)
        if name.startswith(prefix) and name.removeprefix(prefix) not in aliases
    }
    assert constants
    for name, bit in constants.items():
        assert reason_names(bit) == [name]


@pytest.mark.parametrize(
    "error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded]
)
def test_nvml_without_driver_is_a_host_without_gpus(error: type[pynvml.NVMLError]) -> None:
    fake = FakeNvml(raises={"nvmlInit": error})
    backend = NvmlBackend(fake)
    assert not backend.available()
    assert backend.inventory() == [] and backend.sample() == [] and backend.events() == []
    assert str(error()) in (backend.unavailable_reason or "")
    backend.close()
    assert fake.calls["nvmlShutdown"] == 0


def test_nvml_with_zero_gpus_is_unavailable_but_shut_down_once() -> None:
    fake = FakeNvml(gpus=0)
    backend = NvmlBackend(fake)
    assert not backend.available() and not backend.events_active
    backend.close()
    backend.close()
    assert fake.calls["nvmlInit"] == fake.calls["nvmlShutdown"] == 1


def test_handles_are_cached() -> None:
    fake = FakeNvml(gpus=3)
    backend = NvmlBackend(fake)
    samples_of(backend, 5)
    backend.inventory()
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 3
    assert fake.calls["nvmlInit"] == 1


def test_xid_events_are_delivered_by_the_event_thread() -> None:
    fake = FakeNvml(gpus=2, xids=((1, 79), (0, 48)))
    with NvmlBackend(fake) as backend:
        assert backend.events_active
        assert fake.xids_consumed.wait(timeout=5)
        events = backend.events()
        assert backend.events() == []
    assert [(e.index, e.uuid, e.xid, e.simulated) for e in events] == [
        (1, "GPU-fake-1", 79, False),
        (0, "GPU-fake-0", 48, False),
    ]
    assert all(isinstance(e, XidEvent) for e in events)
    assert fake.calls["nvmlDeviceRegisterEvents"] == 2
    assert not backend.events_active
    assert fake.calls["nvmlEventSetFree"] == fake.calls["nvmlShutdown"] == 1


def test_gpu_without_xid_support_still_samples() -> None:
    fake = FakeNvml(raises={"nvmlDeviceRegisterEvents": pynvml.NVMLError_NotSupported})
    backend = NvmlBackend(fake)
    assert backend.available() and not backend.events_active
    assert fake.calls["nvmlEventSetFree"] == 1
    assert backend.sample()[0].metrics["utilization_gpu_pct"] == 97


def test_cuda_version_string() -> None:
    assert cuda_version_string(12040) == "12.4"
    assert cuda_version_string(13000) == "13.0"


# --- the real NVML on this machine ---------------------------------------------


@pytest.fixture
def real_nvml() -> Iterator[NvmlBackend]:
    backend = NvmlBackend()
    yield backend
    backend.close()


def test_real_nvml_without_gpu_reports_none(real_nvml: NvmlBackend) -> None:
    if real_nvml.available():
        pytest.skip("this machine has an NVIDIA GPU")
    assert real_nvml.inventory() == []
    assert real_nvml.sample() == []
    assert real_nvml.unsupported_fields() == {}
    assert not real_nvml.events_active
    assert real_nvml.unavailable_reason


def test_real_nvml_with_gpu_reads_it(real_nvml: NvmlBackend) -> None:
    if not real_nvml.available():
        pytest.skip(f"needs a real NVIDIA GPU (NVML: {real_nvml.unavailable_reason})")
    inventory = real_nvml.inventory()
    (first, *_rest) = real_nvml.sample(expensive=True)
    assert inventory and not any(gpu.simulated for gpu in inventory)
    assert inventory[0].uuid.startswith("GPU-") and inventory[0].memory_total_bytes > 0
    assert first.uuid == inventory[0].uuid and not first.simulated
    assert {"utilization_gpu_pct", "power_w", "energy_mj"} <= first.metrics.keys()
    assert real_nvml.events_active
    json.dumps([s.to_dict() for s in real_nvml.sample()])


def test_gpu_check_exits_2_without_a_gpu(real_nvml: NvmlBackend) -> None:
    if real_nvml.available():
        pytest.skip("this machine has an NVIDIA GPU")
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no NVIDIA GPU found" in result.stderr


# --- factory -----------------------------------------------------------------


def test_factory_builds_each_backend() -> None:
    assert isinstance(open_gpu_backend("nvml"), NvmlBackend)
    assert isinstance(open_gpu_backend(" none "), NullBackend)
    simulated = open_gpu_backend("simulated:1xL4-24GB")
    assert isinstance(simulated, SimulatedBackend)
    assert simulated.name == "simulated:1xL4-24GB"
    assert len(simulated.inventory()) == 1


def test_none_backend_reports_nothing() -> None:
    backend = open_gpu_backend("none")
    assert not backend.available()
    assert backend.inventory() == backend.sample() == backend.events() == []


@pytest.mark.parametrize("spec", ["", "cuda", "nvml:0", "none:x", "simulated:", "simulated:9xB200"])
def test_factory_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        open_gpu_backend(spec)
