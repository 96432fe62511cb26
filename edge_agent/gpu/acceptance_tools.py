"""The acceptance record's row, and the checks that run NVIDIA's own tools where the site
repository installed them: DCGM diagnostics (`dcgmi diag`) and NCCL's `all_reduce_perf`.
A tool that is not on PATH is recorded as skipped, never as passed by its absence alone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

NOT_APPLICABLE = "not applicable"
NOT_INSTALLED = "not installed"

# dcgmi diag levels take ~1, ~2, ~15 and ~60+ minutes on 8 GPUs; generous bounds, not targets.
DCGM_TIMEOUT_S = {1: 300, 2: 900, 3: 3600, 4: 7200}
NCCL_TIMEOUT_S = 600
NCCL_ARGS = ("-b", "8M", "-e", "1G", "-f", "2")

Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]
Which = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Check:
    """One row of the acceptance record; `gpu` is the GPU's UUID, None for host-wide checks."""

    name: str
    gpu: str | None
    ok: bool
    measured: Any
    expected: Any
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for a failure message: what was measured against what was expected."""
        where = f" {self.gpu}" if self.gpu else ""
        detail = f" ({self.detail})" if self.detail else ""
        measured, expected = json.dumps(self.measured), json.dumps(self.expected)
        return f"{self.name}{where}: measured {measured}, expected {expected}{detail}"


def skipped(name: str, why: str) -> Check:
    """A check that did not run; it does not hold acceptance back, and says why."""
    return Check(name, None, True, None, None, f"skipped: {why}")


def run_tool(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def _attempt(
    name: str, argv: list[str], timeout_s: float, run: Runner, expected: Any
) -> subprocess.CompletedProcess[str] | Check:
    """Runs a tool; a timeout or a tool that cannot start is a failed check."""
    try:
        return run(argv, timeout_s)
    except subprocess.TimeoutExpired:
        return Check(name, None, False, None, expected, f"{argv[0]} ran past {timeout_s:.0f} s")
    except OSError as exc:
        return Check(name, None, False, None, expected, f"cannot run {argv[0]}: {exc}")


def _last_line(*texts: str) -> str:
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def dcgm_failures(stdout: str) -> tuple[list[str], int] | None:
    """(failed test names, tests seen) from `dcgmi diag -j`, or None if it is not that JSON.
    DCGM 3 names the top key "DCGM GPU Diagnostic", DCGM 4 "DCGM Diagnostic"; both hold
    test_categories[].tests[] with per-entity results[] (and in DCGM 4 a test_summary)."""
    start = stdout.find("{")
    try:
        doc = json.loads(stdout[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    root = next((v for v in doc.values() if isinstance(v, dict) and "test_categories" in v), None)
    if root is None:
        return None
    failed, seen = [], 0
    for category in root.get("test_categories") or []:
        for test in category.get("tests") or []:
            seen += 1
            results = [*(test.get("results") or []), test.get("test_summary") or {}]
            if any(str(r.get("status", "")).lower().startswith("fail") for r in results):
                failed.append(str(test.get("name", "?")))
    return failed, seen


def dcgm_check(level: int, *, run: Runner = run_tool, which: Which = shutil.which) -> Check:
    """`dcgmi diag -r LEVEL -j`: passes when dcgmi exits 0 and no test reports Fail."""
    name, expected = "dcgm_diag", f"level {level}: no test failed"
    if level == 0:
        return skipped(name, "dcgm_level 0")
    dcgmi = which("dcgmi")
    if dcgmi is None:
        return skipped(name, NOT_INSTALLED)
    done = _attempt(
        name, [dcgmi, "diag", "-r", str(level), "-j"], DCGM_TIMEOUT_S[level], run, expected
    )
    if isinstance(done, Check):
        return done
    parsed = dcgm_failures(done.stdout)
    if parsed is None:
        ok = done.returncode == 0
        detail = "" if ok else f"exit {done.returncode}: {_last_line(done.stdout, done.stderr)}"
        return Check(name, None, ok, {"level": level}, expected, detail or "output not JSON")
    failed, seen = parsed
    ok = done.returncode == 0 and not failed
    measured = {"level": level, "tests": seen, "failed": failed}
    detail = "" if ok else f"exit {done.returncode}" + (f": {', '.join(failed)}" if failed else "")
    return Check(name, None, ok, measured, expected, detail)


_BUSBW = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*([0-9.]+)", re.MULTILINE)
_OUT_OF_BOUNDS = re.compile(r"^#\s*Out of bounds values\s*:\s*(\d+)", re.MULTILINE)


def nccl_check(
    gpus: int,
    min_busbw_gbps: float | None,
    *,
    run: Runner = run_tool,
    which: Which = shutil.which,
) -> Check:
    """all_reduce_perf over every GPU of the machine (8 MB to 1 GB): passes when it exits 0,
    every result was correct, and the average bus bandwidth meets the threshold if one is set."""
    name = "nccl_all_reduce"
    expected = f">= {min_busbw_gbps} GB/s" if min_busbw_gbps is not None else "no wrong results"
    binary = which("all_reduce_perf")
    if binary is None:
        return skipped(name, NOT_INSTALLED)
    if gpus < 2:
        return skipped(name, "an all-reduce needs two GPUs")
    argv = [binary, *NCCL_ARGS, "-g", str(gpus)]
    done = _attempt(name, argv, NCCL_TIMEOUT_S, run, expected)
    if isinstance(done, Check):
        return done
    busbw = _BUSBW.search(done.stdout)
    wrong = _OUT_OF_BOUNDS.search(done.stdout)
    measured = float(busbw.group(1)) if busbw else None
    problems = []
    if done.returncode != 0 or measured is None:
        problems.append(f"exit {done.returncode}: {_last_line(done.stdout, done.stderr)}")
    if wrong and int(wrong.group(1)):
        problems.append(f"{wrong.group(1)} wrong values")
    if measured is not None and min_busbw_gbps is not None and measured < min_busbw_gbps:
        problems.append("bus bandwidth below the threshold")
    return Check(name, None, not problems, measured, expected, "; ".join(problems))
