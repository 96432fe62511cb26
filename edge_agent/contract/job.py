"""Jobs between hub and agent: the attempts the hub asks an agent to run (under `jobs` in the
desired-state document) and what the agent reports back about each (under `jobs` in its
check-in report).

Both sides import this module. An attempt is keyed by its `attempt` id, which the agent echoes
in every report: the hub applies a report only to the attempt it is about, so a late report
from an old attempt can never overwrite a newer one. Reports carry a `seq` that grows with
every change the agent journals, so replaying one (after a cut, a crash) changes nothing.

An attempt leaves the desired state only once the hub has stored its final report (or has
given up on it and started another attempt); an agent stops a container whose attempt is no
longer desired. `stop` asks the agent to end a running attempt: `cancel`, or `preempt`
(SIGTERM, `grace_s` to finish, then SIGKILL; the hub requeues the job).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from edge_agent.contract.fields import ContractError, items, mapping, number, text, whole
from edge_agent.contract.model import ModelRef, model_entry, parse_model
from edge_agent.contract.workload import (
    Image,
    Volume,
    _count,
    _env,
    _image,
    _name,
    _strings,
    _unset_if_zero,
    _volume,
    image_entry,
    volume_entries,
)

log = logging.getLogger("aiorch.agent.jobs")

ATTEMPT_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,127}\Z")
STOPS = ("cancel", "preempt")
# What an agent reports an attempt as. `exited` carries the exit code; `stopped` ended on the
# hub's `stop`; `timed_out` ran past max_duration_s; `failed` could not start (reason says why).
AGENT_STATES = ("pending", "starting", "running", "exited", "stopped", "timed_out", "failed")
FINAL_AGENT_STATES = ("exited", "stopped", "timed_out", "failed")
LOG_TAIL_BYTES = 64 * 1024  # the most of a job's log one report carries (its end)
ARTIFACT_LOCATIONS = ("hub", "site")


@dataclass(frozen=True)
class JobRun:
    """One attempt of a job, as the agent runs it."""

    attempt: str
    job: str
    project: str
    image: Image
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str]
    secret_env: dict[str, str]
    volumes: tuple[Volume, ...]
    gpus: tuple[int, ...]  # device indices; none when `simulated_gpus`
    simulated_gpus: int  # GPUs the hub counted on simulated devices: run without devices
    cpu: float | None
    memory_mib: int | None
    max_duration_s: int
    artifacts: tuple[str, ...]  # absolute paths inside the container, collected at the end
    site_artifact_limit_bytes: int  # larger artifacts stay at the site, by reference
    stop: str | None = None  # "cancel" or "preempt"
    grace_s: int = 30
    models: tuple[ModelRef, ...] = ()

    @property
    def container_name(self) -> str:
        return f"aiorch-job-{self.attempt}"


@dataclass(frozen=True)
class Artifact:
    path: str  # inside the container
    sha256: str
    size: int
    location: str  # "hub" (uploaded and checked there) or "site" (kept on the host)
    site_path: str | None = None  # where it lies on the host, for "site"


@dataclass(frozen=True)
class JobReport:
    """What the agent journaled about one attempt; `started_at`/`finished_at` are the host's
    clock (epoch seconds)."""

    attempt: str
    seq: int
    state: str
    reason: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_tail: str = ""
    log_bytes: int = 0  # the whole log's length; log_tail is its last LOG_TAIL_BYTES
    artifacts: tuple[Artifact, ...] = ()

    @property
    def final(self) -> bool:
        return self.state in FINAL_AGENT_STATES


def runnable_entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The desired document's entries that run a container: its workloads and its job
    attempts, which name images, models and secrets alike."""
    entries = [*(document.get("workloads") or []), *(document.get("jobs") or [])]
    return [entry for entry in entries if isinstance(entry, dict)]


def job_entry(run: JobRun) -> dict[str, Any]:
    """One attempt as JSON data for the desired state; `parse_job_run` reads it back."""
    return {
        "attempt": run.attempt,
        "job": run.job,
        "project": run.project,
        "image": image_entry(run.image),
        "command": list(run.command),
        "args": list(run.args),
        "env": dict(run.env),
        "secret_env": dict(run.secret_env),
        "volumes": volume_entries(run.volumes),
        "gpus": list(run.gpus),
        "simulated_gpus": run.simulated_gpus,
        "cpu": run.cpu,
        "memory_mib": run.memory_mib,
        "max_duration_s": run.max_duration_s,
        "artifacts": list(run.artifacts),
        "site_artifact_limit_bytes": run.site_artifact_limit_bytes,
        "stop": run.stop,
        "grace_s": run.grace_s,
        "models": [model_entry(m) for m in run.models],
    }


def parse_job_runs(document: dict[str, Any]) -> tuple[list[JobRun], dict[str, str]]:
    """The document's attempts, and the reasons of entries that can't run, by attempt id."""
    entries = document.get("jobs") or []
    if not isinstance(entries, list):
        log.error("desired state: 'jobs' is not a list; running no jobs")
        return [], {}
    valid: dict[str, JobRun] = {}
    invalid: dict[str, str] = {}
    for position, entry in enumerate(entries):
        attempt = entry.get("attempt") if isinstance(entry, dict) else None
        if not isinstance(attempt, str) or not ATTEMPT_RE.match(attempt):
            log.error("desired state: job #%d has no usable attempt id; skipped", position)
            continue
        try:
            if attempt in valid or attempt in invalid:
                raise ContractError("attempt", "appears more than once")
            valid[attempt] = parse_job_run(entry)
        except ContractError as exc:
            valid.pop(attempt, None)
            invalid[attempt] = f"invalid job: {exc}"
    return list(valid.values()), invalid


def parse_job_run(raw: dict[str, Any]) -> JobRun:
    """One entry, checked field by field; ContractError names the first wrong field."""
    stop = raw.get("stop")
    if stop is not None and stop not in STOPS:
        raise ContractError("stop", f"must be one of {', '.join(STOPS)} or null, got {stop!r}")
    return JobRun(
        attempt=text(raw.get("attempt"), "attempt", 128),
        job=_name(raw, "job"),
        project=_name(raw, "project"),
        image=_image(mapping(raw.get("image"), "image")),
        command=_strings(raw, "command"),
        args=_strings(raw, "args"),
        env=_env(raw, "env"),
        secret_env=_env(raw, "secret_env"),
        volumes=tuple(_volume(v) for v in items(raw.get("volumes"), "volumes")),
        gpus=tuple(whole(g, "gpus", maximum=1023) for g in items(raw.get("gpus"), "gpus")),
        simulated_gpus=_count(raw.get("simulated_gpus"), "simulated_gpus"),
        cpu=_unset_if_zero(raw.get("cpu"), "cpu"),
        memory_mib=_count(raw.get("memory_mib"), "memory_mib") or None,
        max_duration_s=whole(raw.get("max_duration_s"), "max_duration_s", 1),
        artifacts=_paths(raw),
        site_artifact_limit_bytes=_count(
            raw.get("site_artifact_limit_bytes"), "site_artifact_limit_bytes"
        ),
        stop=stop,
        grace_s=_count(raw.get("grace_s"), "grace_s"),
        models=tuple(
            parse_model(m, f"models[{i}]") for i, m in enumerate(items(raw.get("models"), "models"))
        ),
    )


def _paths(raw: dict[str, Any]) -> tuple[str, ...]:
    paths = _strings(raw, "artifacts")
    for path in paths:
        if not path.startswith("/") or "\n" in path or "/../" in f"{path}/":
            raise ContractError("artifacts", f"{path!r} must be an absolute path without '..'")
    return paths


def job_report_entry(report: JobReport) -> dict[str, Any]:
    """One attempt's report as JSON data; `parse_job_reports` reads it back."""
    return {
        "seq": report.seq,
        "state": report.state,
        "reason": report.reason,
        "exit_code": report.exit_code,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "log_tail": report.log_tail,
        "log_bytes": report.log_bytes,
        "artifacts": [
            {
                "path": a.path,
                "sha256": a.sha256,
                "size": a.size,
                "location": a.location,
                "site_path": a.site_path,
            }
            for a in report.artifacts
        ],
    }


def parse_job_reports(raw: Any) -> dict[str, JobReport]:
    """`{attempt: report}` from a check-in; ContractError names the first wrong field."""
    reports = {}
    for attempt, entry in mapping(raw, "jobs", optional=True).items():
        if not isinstance(attempt, str) or not ATTEMPT_RE.match(attempt):
            raise ContractError("jobs", f"{attempt!r} is not an attempt id")
        reports[attempt] = _report(attempt, mapping(entry, f"jobs.{attempt}"))
    return reports


def _report(attempt: str, raw: dict[str, Any]) -> JobReport:
    where = f"jobs.{attempt}"
    state = raw.get("state")
    if state not in AGENT_STATES:
        raise ContractError(f"{where}.state", f"must be one of {', '.join(AGENT_STATES)}")
    log_tail = raw.get("log_tail") or ""
    if not isinstance(log_tail, str) or len(log_tail.encode()) > LOG_TAIL_BYTES:
        raise ContractError(f"{where}.log_tail", f"must be a string of <= {LOG_TAIL_BYTES} bytes")
    reason = raw.get("reason")
    exit_code = raw.get("exit_code")
    return JobReport(
        attempt=attempt,
        seq=whole(raw.get("seq"), f"{where}.seq"),
        state=state,
        reason=None if reason is None else text(reason, f"{where}.reason", 2000),
        exit_code=None if exit_code is None else whole(exit_code, f"{where}.exit_code", -255, 255),
        started_at=_time(raw.get("started_at"), f"{where}.started_at"),
        finished_at=_time(raw.get("finished_at"), f"{where}.finished_at"),
        log_tail=log_tail,
        log_bytes=_count(raw.get("log_bytes"), f"{where}.log_bytes"),
        artifacts=tuple(
            _artifact(a, f"{where}.artifacts[{i}]")
            for i, a in enumerate(items(raw.get("artifacts"), f"{where}.artifacts"))
        ),
    )


def _time(value: Any, where: str) -> float | None:
    return None if value is None else number(value, where)


def _artifact(raw: Any, where: str) -> Artifact:
    raw = mapping(raw, where)
    sha = text(raw.get("sha256"), f"{where}.sha256", 64)
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ContractError(f"{where}.sha256", "must be 64 lowercase hex digits")
    location = raw.get("location")
    if location not in ARTIFACT_LOCATIONS:
        raise ContractError(f"{where}.location", "must be hub or site")
    site_path = raw.get("site_path")
    return Artifact(
        path=text(raw.get("path"), f"{where}.path"),
        sha256=sha,
        size=_count(raw.get("size"), f"{where}.size"),
        location=location,
        site_path=None if site_path is None else text(site_path, f"{where}.site_path"),
    )
