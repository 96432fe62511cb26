"""Benchmark: one lab VM's whole bare-metal cycle, step by step, in QEMU TCG on this machine.

It runs the lab's cycle test (tests/test_metal_lab.py: inspect and burn-in, provision with the
root image written, boot from the disk and the agent enrolled, the configure run, then
retire, drain and wipe back to ready) and reads the timings that test prints. The same code
path as `make test`, so the figure is what an operator's lab would see. The BMC is
sushy-emulator's fake (simulated); the machine is a real VM.

Baseline in the same run: the inspect and burn-in step, a fixed amount of work in the same
emulated CPU (a PXE boot of the ramdisk, its inventory, a 5 s stress-ng and fio), so each
step's ratio to it holds up when the shared machine is slower or faster than usual.
Goal: inspect to serving under 5 minutes. Run as root: `.venv/bin/python
benchmarks/bench_vm_cycle.py` (about 10 minutes; the image and ramdisk are cached after
the first build).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/test_metal_lab.py"
CYCLE_LINE = "lab machine cycle:"  # as the test prints it
BASELINE = "inspect + burn-in"
TO_SERVING = ("inspect + burn-in", "provision (image written)",
              "boot from disk + agent enrolled", "site.yml")  # fmt: skip
GOAL_S = 300.0


def cycle() -> dict[str, Any]:
    env = {**os.environ, "AIORCH_REQUIRE_LAB": "1"}
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
            TEST, "-k", "retire_ready"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(CYCLE_LINE):
            return dict(json.loads(line[len(CYCLE_LINE) :]))
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
    raise SystemExit(f"the cycle test printed no timings (exit {done.returncode}):\n{tail}")


def main() -> int:
    result = cycle()
    steps = {str(k): float(v) for k, v in result["steps_s"].items()}
    base = steps[BASELINE]
    print(f"one lab VM, QEMU TCG, 1 vCPU; baseline: {BASELINE} {base:.1f} s")
    for name, seconds in steps.items():
        print(f"  {name:34s} {seconds:7.1f} s   {seconds / base:5.2f}x baseline")
    serving = sum(steps[name] for name in TO_SERVING)
    print(f"inspect to serving: {serving:.1f} s ({serving / base:.2f}x baseline), "
          f"goal {GOAL_S:.0f} s: {'met' if serving <= GOAL_S else 'not met'}; "
          f"VM boots: {result['vm_boots']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
