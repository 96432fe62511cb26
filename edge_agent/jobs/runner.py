"""Run the desired job attempts with podman, one pass per agent round, hub or no hub.

Each pass reads the attempts from the desired state on disk, the journals from the state dir
and the job containers this agent made (they carry its owner label and the attempt id), and
moves every attempt one step: fetch its image, start it, watch it, stop it (the hub's `stop`,
or its maxDuration, enforced here so it holds with the hub away), and once it has ended take
its log and artifacts out, remove the container and journal the outcome. Nothing waits for
the hub: a stop is SIGTERM now and SIGKILL `grace_s` later, checked on later passes.

A restarted agent reads the journals back and re-inspects the containers: a job that ended
while the agent was down is reported with its real exit code. A container whose attempt the
hub no longer asks for is stopped and removed (fenced) and never reported as an outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_agent.contract.job import JobRun, parse_job_runs
from edge_agent.jobs import artifacts
from edge_agent.jobs.journal import LOG_KEEP_BYTES, Journal, JournalStore
from edge_agent.workloads import container
from edge_agent.workloads.images import ImageCache, Readiness
from edge_agent.workloads.models import ModelCache
from edge_agent.workloads.podman import JOB, MANAGED, OWNER, Container, Podman, PodmanError
from edge_agent.workloads.reconcile import NEVER_RAN

log = logging.getLogger("aiorch.agent.jobs")

IMAGE_WAIT_S = 5.0  # as for workloads: a round waits this long for an image, then moves on
KEEP_REPORTING_S = 86400.0  # a final attempt is reported this long after the hub drops it
# A running job's log is read again at most this often (podman streams it whole each time);
# an ended job's always, once.
LOG_REFRESH_S = 15.0
SIMULATED = "simulated GPUs: ran without devices"
ENDED = ("exited", "stopped", "dead")


class JobRunner:
    def __init__(
        self,
        state_dir: Path,
        podman: Podman,
        images: ImageCache,
        models: ModelCache,
        run_args: Sequence[str] = (),
        upload: artifacts.Upload | None = None,
        clock: Callable[[], float] = time.time,
        image_wait_s: float = IMAGE_WAIT_S,
    ) -> None:
        self.owner = str(state_dir.resolve())  # the same owner label as the workloads'
        self.podman = podman
        self.images = images
        self.models = models
        self.run_args = list(run_args)
        self.upload = upload
        self.clock = clock
        self.image_wait_s = image_wait_s
        self.journals = JournalStore(state_dir / "jobs")
        self.artifact_root = state_dir / "artifacts"
        self.scratch = state_dir / "run"
        self._log_read_at: dict[str, float] = {}  # attempt -> monotonic time of the last read

    def run(self, document: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """One pass; returns the check-in's `jobs`: `{attempt: job_report_entry(...)}`."""
        runs, invalid = parse_job_runs(document)
        self.images.pinned["jobs"] = {r.image.digest for r in runs}
        self.models.pinned["jobs"] = {m.digest for r in runs for m in r.models}
        journals = {j.attempt: j for j in self.journals.all()}
        now = self.clock()
        for attempt, reason in invalid.items():
            journal = journals.setdefault(attempt, Journal(attempt))
            if not journal.final:
                journal.move("failed", now, reason)
                self.journals.save(journal)
        desired = {r.attempt for r in runs} | set(invalid)
        if runs or any(not j.final and not j.fenced for j in journals.values()):
            self._step_all(runs, journals)
        return self._reports(journals, desired, now)

    def _step_all(self, runs: list[JobRun], journals: dict[str, Journal]) -> None:
        if not self.podman.available():
            for run in runs:
                journal = journals.setdefault(run.attempt, Journal(run.attempt))
                if not journal.final:
                    journal.reason = "podman is not installed on this host"
            return
        try:
            ours = {c.labels[JOB]: c for c in self.podman.containers(self.owner, JOB)}
        except PodmanError as exc:
            log.error("cannot list job containers: %s", exc)
            return
        deadline = time.monotonic() + self.image_wait_s
        for run in runs:
            journal = journals.setdefault(run.attempt, Journal(run.attempt))
            before = (journal.state, journal.reason, len(journal.artifacts))
            try:
                self._step(run, journal, ours.pop(run.attempt, None), deadline)
            except PodmanError as exc:  # podman trouble: said in the report, retried next round
                journal.reason = str(exc)
            if (journal.state, journal.reason, len(journal.artifacts)) != before:
                log.info("job %s: %s%s", run.attempt, journal.state, _suffix(journal.reason))
                self.journals.save(journal)
        for attempt, leftover in ours.items():  # not desired any more: fenced
            self._fence(leftover, journals.get(attempt))

    def _step(
        self, run: JobRun, journal: Journal, found: Container | None, deadline: float
    ) -> None:
        now = self.clock()
        if run.simulated_gpus:
            journal.note(SIMULATED)
        if journal.final:
            if found is not None:
                container.remove(self.podman, found.id)
            if artifacts.upload_pending(journal, self.upload):
                self.journals.save(journal)
            return
        if found is None:
            if journal.started_at is not None:
                journal.move("failed", now, "the job's container disappeared")
                journal.finished_at = now
            elif run.stop is not None:
                journal.move("stopped", now, f"{run.stop} before it started")
                journal.finished_at = now
            else:
                self._start(run, journal, deadline)
            return
        journal.started_at = journal.started_at or found.started_at or now
        if journal.state != "running" and found.state == "running":
            journal.move("running", now)
        if found.state in ENDED:
            self._finish(run, journal, found)
        elif found.state in NEVER_RAN:  # `podman run` made it but could not start it
            container.remove(self.podman, found.id)
            journal.move("failed", now, f"the container did not start ({found.state})")
            journal.finished_at = now
        else:  # running (or paused, stopping): the stop and maxDuration hold all the same
            self._watch(run, journal, found, now)

    def _start(self, run: JobRun, journal: Journal, deadline: float) -> None:
        now = self.clock()
        try:
            ready = self.images.resolve(run.image, self.podman.image_ids(), deadline)
        except PodmanError as exc:
            ready = Readiness("failed", f"cannot list images: {exc}")
        for model in run.models:  # fetched meanwhile, on a thread of their own
            got = self.models.resolve(model, deadline)
            if got.state != "ready" and ready.image_id is not None:
                ready = Readiness(got.state, got.reason)
        if ready.image_id is None:
            state = "failed" if ready.state == "failed" else "starting"
            journal.move(state, now, ready.reason)
            if state == "failed":
                journal.finished_at = now
            return
        marks = {MANAGED: "true", OWNER: self.owner, JOB: run.attempt}
        try:
            container.launch(self.podman, run, ready.image_id, marks, self.run_args, self.scratch)
        except PodmanError as exc:
            journal.move("failed", now, f"cannot start: {exc}")
            journal.finished_at = now
            return
        journal.started_at = now
        journal.move("running", now)
        log.info("job %s: started container %s", run.attempt, run.container_name)

    def _watch(self, run: JobRun, journal: Journal, found: Container, now: float) -> None:
        """A running job: its log, then the hub's stop, maxDuration and the grace period."""
        if time.monotonic() - self._log_read_at.get(run.attempt, -LOG_REFRESH_S) >= LOG_REFRESH_S:
            self._keep_log(journal, found)
        if journal.stopping is None:
            if run.stop is not None:
                journal.stopping, why = "stopped", f"stopped by the hub ({run.stop})"
            elif journal.started_at is not None and now - journal.started_at > run.max_duration_s:
                journal.stopping, why = "timed_out", f"ran past maxDuration ({run.max_duration_s}s)"
            else:
                return
            journal.reason, journal.stop_sent_at = why, now
            self.podman("kill", "--signal", "TERM", found.id)
            self.journals.save(journal)
        elif journal.stop_sent_at is not None and now - journal.stop_sent_at >= run.grace_s:
            self.podman("kill", "--signal", "KILL", found.id)

    def _finish(self, run: JobRun, journal: Journal, found: Container) -> None:
        """The container has ended: log, artifacts, then the outcome, then the container goes."""
        self._keep_log(journal, found)
        records, notes = artifacts.collect(self.podman, found.id, run, self.artifact_root)
        journal.artifacts = records
        for note in notes:
            journal.note(note)
        journal.exit_code = found.exit_code
        journal.finished_at = found.exited_at or self.clock()
        if journal.stopping is not None:
            journal.move(journal.stopping, journal.finished_at, journal.reason)
        else:
            journal.move("exited", journal.finished_at, f"exited with code {found.exit_code}")
        self.journals.save(journal)  # the outcome is on disk before the container goes
        container.remove(self.podman, found.id)
        artifacts.upload_pending(journal, self.upload)
        self._log_read_at.pop(journal.attempt, None)

    def _keep_log(self, journal: Journal, found: Container) -> None:
        self._log_read_at[journal.attempt] = time.monotonic()
        tail, total = self.podman.log_tail(found.id, LOG_KEEP_BYTES)
        if total != journal.log_bytes:
            self.journals.save_log(journal.attempt, tail)
            journal.log_bytes = total

    def _fence(self, found: Container, journal: Journal | None) -> None:
        """A job container the hub no longer asks for: stopped, removed, never reported."""
        try:
            container.remove(self.podman, found.id)
        except PodmanError as exc:
            log.error("cannot remove job container %s: %s", found.name, exc)
            return
        log.info("removed job container %s: its attempt is no longer desired", found.name)
        self._log_read_at.pop(found.labels[JOB], None)
        if journal is not None and not journal.final:
            journal.fenced = True
            self.journals.save(journal)

    def _reports(
        self, journals: dict[str, Journal], desired: set[str], now: float
    ) -> dict[str, dict[str, Any]]:
        reports = {}
        for attempt, journal in sorted(journals.items()):
            if attempt in desired:
                if journal.undesired_since is not None:
                    journal.undesired_since = None
                    self.journals.save(journal)
            elif journal.undesired_since is None:
                journal.undesired_since = now
                self.journals.save(journal)
            elif now - journal.undesired_since > KEEP_REPORTING_S:
                self.journals.drop(attempt)
                continue
            if attempt not in desired and not journal.final and not journal.fenced:
                journal.fenced = True  # dropped before it ended: its container went above
                self.journals.save(journal)
            if journal.fenced:
                continue
            reports[attempt] = self.journals.report(journal)
        return reports


def _suffix(reason: str | None) -> str:
    return f" ({reason})" if reason else ""
