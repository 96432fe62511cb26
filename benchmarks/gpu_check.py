"""Check edge_agent.gpu's NVML backend on a real NVIDIA machine.

    PYTHONPATH=. python3 benchmarks/gpu_check.py

Prints the inventory and the unsupported fields, measures what sampling costs
(cheap fields must stay under 100 us per GPU per sample), runs a bf16 matmul load
on every GPU with torch in a subprocess, and checks that utilization and power
rose and that the XID event thread runs. The last line is a JSON summary.
Exit status: 0 all checks passed, 1 a check failed, 2 no NVIDIA GPU found.
It never falls back to simulated GPUs.
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import sys
import time
from typing import Any

import pynvml

from edge_agent.gpu import FIELDS, GpuInfo, NvmlBackend

CHEAP_BUDGET_US = 100.0
COST_SAMPLES = 200
EXPENSIVE_SAMPLES = 5
FIELD_REPEATS = {False: 50, True: 3}  # by Field.expensive
IDLE_SECONDS = 3.0
LOAD_SECONDS = 15.0
LOAD_RAMP_SECONDS = 1.0
LOAD_START_TIMEOUT_S = 45.0
OBSERVE_PERIOD_S = 0.25
UTIL_RISE_PCT = 20.0
POWER_RISE_FACTOR = 1.2

# Runs in its own process so torch neither shares the GIL with the sampler nor
# keeps a CUDA context in it.
LOAD_SCRIPT = """
import sys, time, torch
seconds = float(sys.argv[1])
pairs = []
for d in range(torch.cuda.device_count()):
    a = torch.randn(8192, 8192, device=f"cuda:{d}", dtype=torch.bfloat16)
    pairs.append((a, torch.randn_like(a), torch.empty_like(a)))
if not pairs:
    sys.exit("torch sees no CUDA device")
for a, b, c in pairs:
    torch.matmul(a, b, out=c)
torch.cuda.synchronize()
print("ready", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for a, b, c in pairs:
        for _ in range(20):
            torch.matmul(a, b, out=c)
    for d in range(len(pairs)):
        torch.cuda.synchronize(d)
"""


def main() -> int:
    backend = NvmlBackend()
    if not backend.available():
        print(f"no NVIDIA GPU found ({backend.unavailable_reason})", file=sys.stderr)
        return 2
    with backend:
        return _check(backend)


def _check(backend: NvmlBackend) -> int:
    inventory = backend.inventory()
    for gpu in inventory:
        print("gpu:", json.dumps(gpu.to_dict()))
    backend.sample(expensive=True)  # the first full read finds the unsupported fields
    unsupported = backend.unsupported_fields()
    print("unsupported fields:", json.dumps(unsupported))

    gpus = len(inventory)
    cheap_us = _sample_cost_us(backend, False, COST_SAMPLES) / gpus
    expensive_us = _sample_cost_us(backend, True, EXPENSIVE_SAMPLES) / gpus - cheap_us
    print(f"per GPU per sample: cheap fields {cheap_us:.1f} us, expensive {expensive_us:.1f} us")
    field_us = _field_cost_us(inventory, unsupported)
    for name, us in field_us.items():
        print(f"  {name:<22}{us:10.1f} us")

    idle = _observe(backend, IDLE_SECONDS)
    print("idle:", json.dumps(idle))
    load, load_error = _observe_under_load(backend)
    print("load:", json.dumps(load))

    util_rose = _rose(idle, load, "utilization_pct_mean", lambda v: v + UTIL_RISE_PCT)
    power_rose = _rose(idle, load, "power_w_mean", lambda v: v * POWER_RISE_FACTOR)
    failures = []
    if cheap_us > CHEAP_BUDGET_US:
        failures.append(f"cheap fields cost {cheap_us:.1f} us > {CHEAP_BUDGET_US} us per GPU")
    if load_error:
        failures.append(load_error)
    if not util_rose:
        failures.append("utilization did not rise under load")
    if not power_rose:
        failures.append("power did not rise under load")
    if not backend.events_active:
        failures.append("XID event thread is not running")
    summary = {
        "gpus": [gpu.name for gpu in inventory],
        "cheap_us_per_gpu_sample": round(cheap_us, 1),
        "expensive_us_per_gpu_sample": round(expensive_us, 1),
        "field_us_per_gpu": field_us,
        "unsupported_fields": unsupported,
        "idle": idle,
        "load": load,
        "utilization_rose": util_rose,
        "power_rose": power_rose,
        "xid_thread_running": backend.events_active,
        "xid_events": [event.to_dict() for event in backend.events()],
        "failures": failures,
        "ok": not failures,
    }
    print(json.dumps(summary, sort_keys=True))
    return 1 if failures else 0


def _sample_cost_us(backend: NvmlBackend, expensive: bool, samples: int) -> float:
    """Mean wall time of one sample() of every GPU, in microseconds."""
    times = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        backend.sample(expensive=expensive)
        times.append(time.perf_counter_ns() - start)
    return statistics.fmean(times) / 1000


def _field_cost_us(inventory: list[GpuInfo], unsupported: dict[int, list[str]]) -> dict[str, float]:
    """Per-field cost per GPU, to show which query to move if the budget is blown."""
    handles = {gpu.index: pynvml.nvmlDeviceGetHandleByIndex(gpu.index) for gpu in inventory}
    costs = {}
    for f in FIELDS:
        targets = [h for i, h in handles.items() if f.name not in unsupported.get(i, [])]
        if not targets:
            continue
        repeats = FIELD_REPEATS[f.expensive]
        start = time.perf_counter_ns()
        for _ in range(repeats):
            for handle in targets:
                f.read(pynvml, handle)
        costs[f.name] = round((time.perf_counter_ns() - start) / 1000 / repeats / len(targets), 1)
    return costs


def _observe(backend: NvmlBackend, seconds: float) -> dict[str, Any]:
    """Mean and peak utilization and power over all GPUs for `seconds`."""
    util: list[float] = []
    power: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sample in backend.sample(expensive=False):
            if "utilization_gpu_pct" in sample.metrics:
                util.append(sample.metrics["utilization_gpu_pct"])
            if "power_w" in sample.metrics:
                power.append(sample.metrics["power_w"])
        time.sleep(OBSERVE_PERIOD_S)
    return {
        "utilization_pct_mean": round(statistics.fmean(util), 1) if util else None,
        "utilization_pct_max": max(util, default=None),
        "power_w_mean": round(statistics.fmean(power), 1) if power else None,
        "power_w_max": max(power, default=None),
    }


def _observe_under_load(backend: NvmlBackend) -> tuple[dict[str, Any], str | None]:
    """Starts the torch load, waits until it is computing, then observes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD_SCRIPT, str(LOAD_SECONDS)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], LOAD_START_TIMEOUT_S)
        line = proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            return {}, f"torch load did not start (exit {proc.poll()}, said {line!r})"
        time.sleep(LOAD_RAMP_SECONDS)  # let clocks and NVML's power average catch up
        return _observe(backend, LOAD_SECONDS - LOAD_RAMP_SECONDS - 2), None
    finally:
        proc.kill()
        proc.wait()


def _rose(idle: dict[str, Any], load: dict[str, Any], key: str, threshold: Any) -> bool:
    before, after = idle.get(key), load.get(key)
    return before is not None and after is not None and after >= threshold(before)


if __name__ == "__main__":
    sys.exit(main())
