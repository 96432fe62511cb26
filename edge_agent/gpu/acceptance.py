"""The GPU acceptance gate: after a machine's first OS boot, its GPUs are checked on the
production driver stack and the result becomes the machine's acceptance record.

Every check yields a row `{name, gpu, ok, measured, expected, detail}`; the machine is accepted
when every row is ok. A reading the hardware cannot give (retired pages on an H200, remapped
rows on an L4) is "not applicable", never a pass by accident: any other read error fails its
check. The counters come through the agent's own GPU backends (so the simulated lab backend
works, labelled as such); the few readings the backends do not carry (ECC mode, PCIe link,
retired pages, serial) come from a Probe per backend (acceptance_probes). DCGM and NCCL run
where installed (acceptance_tools). Only the standard library and pynvml are used, so a GPU
machine's bare python3 can run it: `python3 -m edge_agent.gpu.acceptance`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from edge_agent.gpu.acceptance_probes import NotApplicable, Probe, Unreadable, open_probe
from edge_agent.gpu.acceptance_tools import (
    NOT_APPLICABLE,
    Check,
    Runner,
    Which,
    dcgm_check,
    nccl_check,
    run_tool,
    skipped,
)
from edge_agent.gpu.base import GpuBackend, GpuInfo, GpuSample


class ProfileError(ValueError):
    """Input the check cannot use: a thresholds profile (unknown key, wrong type), or a
    backend name."""


@dataclass(frozen=True)
class Thresholds:
    """What a machine must show. None: no fixed expectation (at least one GPU; each PCIe
    link at the most it can train at). dcgm_level 0 skips DCGM."""

    expect_count: int | None = None
    model: str | None = None
    min_pcie_width: int | None = None
    min_pcie_gen: int | None = None
    dcgm_level: int = 2
    min_nccl_busbw_gbps: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Thresholds:
        """Validates a profile (a JSON object, or the CLI's flags); None values are unset."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ProfileError(f"unknown threshold {key!r}; known: {', '.join(known)}")
            if value is not None:
                values[key] = _typed(key, value)
        if values.get("dcgm_level", 2) not in (0, 1, 2, 3, 4):
            raise ProfileError(f"dcgm_level must be 0 (skip) to 4, got {values['dcgm_level']}")
        return cls(**values)


def _typed(key: str, value: Any) -> Any:
    if key == "model":
        if not isinstance(value, str) or not value:
            raise ProfileError(f"model must be a non-empty string, got {value!r}")
        return value
    kind = float if key == "min_nccl_busbw_gbps" else int
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProfileError(f"{key} must be a number >= 0, got {value!r}")
    if kind is int and value != int(value):
        raise ProfileError(f"{key} must be a whole number, got {value!r}")
    return kind(value)


def _reading(name: str, gpu: GpuInfo, expected: Any, read: Callable[[], Check]) -> Check:
    """Runs one probe-based check: not applicable passes, anything unreadable fails."""
    try:
        return read()
    except NotApplicable as exc:
        return Check(name, gpu.uuid, True, NOT_APPLICABLE, expected, str(exc))
    except Unreadable as exc:
        return Check(name, gpu.uuid, False, None, expected, f"cannot read: {exc}")


def _sampled(
    name: str, field: str, gpu: GpuInfo, sample: GpuSample | None, unsupported: list[str]
) -> dict[str, Any] | str:
    """A sampled counter's metrics, or why there are none (a string)."""
    if field in unsupported:
        return NOT_APPLICABLE
    if sample is None or field in sample.errors:
        why = sample.errors[field] if sample is not None else "the GPU gave no sample"
        return f"cannot read {name}: {why}"
    return sample.metrics


def gpu_checks(probe: Probe, gpu: GpuInfo, sample: GpuSample | None, t: Thresholds) -> list[Check]:
    """Every per-GPU check, in record order."""
    uuid = gpu.uuid
    unsupported = probe.backend.unsupported_fields().get(gpu.index, [])
    checks = []
    if t.model is not None:
        ok = t.model.lower() in gpu.name.lower()
        checks.append(Check("model", uuid, ok, gpu.name, t.model, "" if ok else "another model"))

    def ecc_mode() -> Check:
        try:
            now, pending = probe.ecc_mode(gpu)
        except NotApplicable as exc:  # a GPU without ECC cannot be accepted for ECC
            return Check("ecc_mode", uuid, False, NOT_APPLICABLE, "enabled", f"no ECC: {exc}")
        detail = "" if now == pending else f"after the next reset: {_on(pending)}"
        return Check("ecc_mode", uuid, now, _on(now), "enabled", detail)

    checks.append(_reading("ecc_mode", gpu, "enabled", ecc_mode))
    ecc = _sampled("ECC counters", "ecc_volatile", gpu, sample, unsupported)
    checks.append(_counter_check("ecc_uncorrected_volatile", uuid, ecc, 0, _ecc_measured))
    rows = _sampled("remapped rows", "remapped_rows", gpu, sample, unsupported)
    checks.append(_counter_check("remapped_rows", uuid, rows, _ROWS_OK, _rows_measured))
    checks.append(_reading("retired_pages", gpu, _PAGES_OK, lambda: _pages(probe, gpu)))
    checks.extend(_pcie_checks(probe, gpu, t))
    return checks


_ROWS_OK = "no pending or failed remap"
_PAGES_OK = "no retirement pending"


def _on(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def _ecc_measured(metrics: dict[str, Any]) -> tuple[bool, Any, str]:
    count = int(metrics.get("ecc_volatile_uncorrected", 0))
    return count == 0, count, "" if count == 0 else "uncorrected ECC errors since the last reset"


def _rows_measured(metrics: dict[str, Any]) -> tuple[bool, Any, str]:
    measured = {
        key: metrics.get(f"remapped_rows_{key}")
        for key in ("correctable", "uncorrectable", "pending", "failure")
    }
    bad = [k for k in ("pending", "failure") if measured[k]]
    return not bad, measured, f"remap {' and '.join(bad)}: reset or replace the GPU" if bad else ""


def _counter_check(
    name: str,
    uuid: str,
    metrics: dict[str, Any] | str,
    expected: Any,
    judge: Callable[[dict[str, Any]], tuple[bool, Any, str]],
) -> Check:
    if metrics == NOT_APPLICABLE:
        return Check(name, uuid, True, NOT_APPLICABLE, expected, "not supported by this GPU")
    if isinstance(metrics, str):
        return Check(name, uuid, False, None, expected, metrics)
    ok, measured, detail = judge(metrics)
    return Check(name, uuid, ok, measured, expected, detail)


def _pages(probe: Probe, gpu: GpuInfo) -> Check:
    count, pending = probe.retired_pages(gpu)
    detail = "a page retirement waits for a GPU reset" if pending else ""
    measured = {"double_bit_retired": count, "pending": pending}
    return Check("retired_pages", gpu.uuid, not pending, measured, _PAGES_OK, detail)


def _pcie_checks(probe: Probe, gpu: GpuInfo, t: Thresholds) -> list[Check]:
    """Width is judged on the current link (a lane lost in training shows there); generation
    on what the link can train at, since an idle GPU drops its current generation to save
    power (that current generation is in the detail)."""
    try:
        link = probe.pcie(gpu)
    except (NotApplicable, Unreadable) as exc:
        ok = isinstance(exc, NotApplicable)
        measured = NOT_APPLICABLE if ok else None
        return [
            Check(name, gpu.uuid, ok, measured, expected, str(exc))
            for name, expected in (("pcie_width", t.min_pcie_width), ("pcie_gen", t.min_pcie_gen))
        ]
    width_expected = t.min_pcie_width if t.min_pcie_width is not None else link.max_width
    gen_expected = t.min_pcie_gen if t.min_pcie_gen is not None else link.gpu_max_gen
    width_ok = link.width >= width_expected
    gen_ok = link.max_gen >= gen_expected
    return [
        Check(
            "pcie_width",
            gpu.uuid,
            width_ok,
            link.width,
            width_expected,
            f"x{link.width} of x{link.max_width}" + ("" if width_ok else ": a degraded link"),
        ),
        Check(
            "pcie_gen",
            gpu.uuid,
            gen_ok,
            link.max_gen,
            gen_expected,
            f"link trains at Gen{link.max_gen} (GPU Gen{link.gpu_max_gen}), now Gen{link.gen}"
            + ("" if gen_ok else ": a slower slot or riser"),
        ),
    ]


def _count_check(backend: GpuBackend, gpus: list[GpuInfo], t: Thresholds) -> Check:
    count = len(gpus)
    ok = count == t.expect_count if t.expect_count is not None else count >= 1
    expected = t.expect_count if t.expect_count is not None else ">= 1"
    why = getattr(backend, "unavailable_reason", None) or ""
    return Check("gpu_count", None, ok, count, expected, "" if ok else why or "GPUs missing")


def _xid_check(backend: GpuBackend) -> Check:
    """XID critical errors seen while the checks ran (DCGM's load included)."""
    if not backend.events_active:
        return skipped("xid_events", "no XID watch on this backend")
    xids = [f"{e.uuid or e.index}: XID {e.xid}" for e in backend.events()]
    return Check("xid_events", None, not xids, xids, [], "critical XIDs seen" if xids else "")


def run_acceptance(
    probe: Probe, thresholds: Thresholds, *, run: Runner = run_tool, which: Which = shutil.which
) -> dict[str, Any]:
    """Runs every check and returns the acceptance record (the JSON document)."""
    started = time.monotonic()
    backend = probe.backend
    gpus = backend.inventory()
    samples = {s.uuid: s for s in backend.sample(expensive=False)}
    checks = [_count_check(backend, gpus, thresholds)]
    for gpu in gpus:
        checks.extend(gpu_checks(probe, gpu, samples.get(gpu.uuid), thresholds))
    checks.append(dcgm_check(thresholds.dcgm_level, run=run, which=which))
    checks.append(nccl_check(len(gpus), thresholds.min_nccl_busbw_gbps, run=run, which=which))
    checks.append(_xid_check(backend))
    return {
        "accepted": all(c.ok for c in checks),
        "backend": backend.name,
        "simulated": backend.name.startswith("simulated"),
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 3),
        "thresholds": asdict(thresholds),
        "failures": [c.summary() for c in checks if not c.ok],
        "checks": [c.to_dict() for c in checks],
        "gpus": [
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "serial": probe.serial(g),
                "pci_bus_id": g.pci_bus_id,
                "driver_version": g.driver_version,
            }
            for g in gpus
        ],
    }


def accept(spec: str, thresholds: Thresholds) -> dict[str, Any]:
    """Opens the backend named by `spec`, runs the checks, and releases the driver."""
    try:
        probe = open_probe(spec)
    except ValueError as exc:  # an unknown backend or simulated profile
        raise ProfileError(str(exc)) from None
    with probe.backend:
        return run_acceptance(probe, thresholds)


def main(argv: list[str] | None = None) -> int:
    """`python3 -m edge_agent.gpu.acceptance`: the check without the agent installed."""
    parser = argparse.ArgumentParser(prog="gpu-acceptance", description=__doc__)
    parser.add_argument("--backend", default="nvml", help="nvml or simulated:<profile>")
    add_threshold_flags(parser)
    args = parser.parse_args(argv)
    try:
        record = accept(args.backend, thresholds_from_args(args))
    except ProfileError as exc:
        print(f"gpu-acceptance: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2))
    return 0 if record["accepted"] else 1


def add_threshold_flags(parser: argparse.ArgumentParser) -> None:
    """The profile flags, shared with `aiorch-agent gpu-acceptance`."""
    parser.add_argument("--profile", type=argparse.FileType("r"), help="thresholds, a JSON file")
    parser.add_argument("--expect-count", type=int, help="GPUs the machine must have")
    parser.add_argument("--model", help="a substring every GPU's name must contain, e.g. H200")
    parser.add_argument("--min-pcie-width", type=int, help="lanes (default: the link's max)")
    parser.add_argument("--min-pcie-gen", type=int, help="generation (default: the GPU's max)")
    parser.add_argument("--dcgm-level", type=int, help="dcgmi diag -r level; 0 skips (default 2)")
    parser.add_argument("--min-nccl-busbw", type=float, help="all_reduce_perf GB/s (multi-GPU)")


def thresholds_from_args(args: argparse.Namespace) -> Thresholds:
    """The profile file's thresholds, with the flags given on top."""
    data: dict[str, Any] = {}
    if args.profile is not None:
        with args.profile:
            try:
                data = json.load(args.profile)
            except json.JSONDecodeError as exc:
                raise ProfileError(f"profile {args.profile.name}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ProfileError(f"profile {args.profile.name}: expected a JSON object")
    flags = {
        "expect_count": args.expect_count,
        "model": args.model,
        "min_pcie_width": args.min_pcie_width,
        "min_pcie_gen": args.min_pcie_gen,
        "dcgm_level": args.dcgm_level,
        "min_nccl_busbw_gbps": args.min_nccl_busbw,
    }
    return Thresholds.from_mapping({**data, **{k: v for k, v in flags.items() if v is not None}})


if __name__ == "__main__":
    sys.exit(main())
