"""Converge the host's containers on the desired workloads, one pass per agent round.

Each pass lists the containers this agent made (they carry its labels; nothing else is ever
touched) and compares them with the desired workloads from the state dir, so the same pass
starts new workloads, replaces changed ones (template_hash), removes dropped ones, restarts
crashed ones and, after a reboot, starts everything again. It needs nothing from the hub but
image archives not cached yet: with the hub away, running workloads keep running.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.collectors.workloads import ContainerStatus
from edge_agent.contract.workload import Rejected, Workload, parse_workloads
from edge_agent.workloads import container
from edge_agent.workloads.health import HealthMonitor
from edge_agent.workloads.images import Fetch, ImageCache, Readiness
from edge_agent.workloads.load import LoadMonitor
from edge_agent.workloads.models import FetchFile, ModelCache
from edge_agent.workloads.podman import Container, Podman, PodmanError
from edge_agent.workloads.restarts import WINDOW_S, RestartLog

log = logging.getLogger("aiorch.agent.workloads")

# How long a round waits for an image being fetched and loaded before it reports `pending`
# and moves on; the job goes on in the background and a later round picks up the result.
IMAGE_WAIT_S = 5.0
NEVER_RAN = ("created", "configured", "initialized")


@dataclass(frozen=True)
class WorkloadStatus:
    state: str  # pending, starting, healthy, unhealthy or failed
    reason: str | None
    template_hash: str
    restarts: int = 0
    container: str | None = None  # the container's name, once there is one
    container_state: str = ""  # podman's state of it
    health: str = ""  # the health check's verdict; "" without one
    load: float | None = None  # an autoscaled replica's latest metric value; None: none yet

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "state": self.state,
            "reason": self.reason,
            "template_hash": self.template_hash,
            "restarts": self.restarts,
            "container": self.container,
        }
        if self.load is not None:  # autoscaled replicas only: other reports stay as they were
            report["load"] = self.load
        return report


class Reconciler:
    def __init__(
        self,
        state_dir: Path,
        podman: Podman,
        run_args: Sequence[str] = (),
        fetch: Fetch | None = None,
        image_wait_s: float = IMAGE_WAIT_S,
        model_cache: Path | None = None,
        fetch_model_file: FetchFile | None = None,
    ) -> None:
        # Containers are the agent's by this label value: one state dir is one agent.
        self.owner = str(state_dir.resolve())
        self.podman = podman
        self.run_args = list(run_args)
        self.scratch = state_dir / "run"
        self.images = ImageCache(state_dir / "images", podman, fetch)
        self.models = ModelCache(model_cache or state_dir / "models", fetch_model_file)
        self.restarts = RestartLog(state_dir / "restarts.json")
        self.health = HealthMonitor()
        self.load = LoadMonitor()
        self.image_wait_s = image_wait_s
        self.statuses: dict[str, WorkloadStatus] = {}
        # The document last parsed, and what came of it: parsing (and logging what is wrong
        # with it) once per document, not once per round.
        self._parsed: tuple[str, list[Workload], dict[str, Rejected]] | None = None
        # Nothing desired and nothing of ours left: podman needn't be asked again until
        # something is desired, since only this agent makes containers with its labels.
        self._idle = False

    def close(self) -> None:
        self.health.close()
        self.load.close()
        self.images.close()
        self.models.close()

    def reconcile(self, revision: int, document: dict[str, Any]) -> dict[str, Any]:
        """One pass; returns the report for the hub:
        `{"revision": N, "workloads": {id: {state, reason, template_hash, restarts, container}}}`.
        Podman trouble ends up in the report, never as an exception."""
        text = json.dumps(document, sort_keys=True)
        if self._parsed is None or self._parsed[0] != text:
            self._parsed = (text, *parse_workloads(document))
        _, workloads, rejected = self._parsed
        statuses = {
            wid: WorkloadStatus("failed", r.reason, r.template_hash) for wid, r in rejected.items()
        }
        if workloads or not self._idle:
            statuses.update(self._converge_all(workloads, set(rejected)))
        self._log_changes(statuses)
        self.statuses = statuses
        return {
            "revision": revision,
            "workloads": {wid: status.report() for wid, status in sorted(statuses.items())},
        }

    def container_statuses(self) -> list[ContainerStatus]:
        """The latest pass's containers, for telemetry."""
        return [
            ContainerStatus(
                name=s.container, state=s.container_state, restarts=s.restarts, health=s.health
            )
            for s in self.statuses.values()
            if s.container is not None and s.container_state
        ]

    def _converge_all(
        self, workloads: list[Workload], protected: set[str]
    ) -> dict[str, WorkloadStatus]:
        if not self.podman.available():
            return {w.id: _failed(w, "podman is not installed on this host") for w in workloads}
        try:
            ours: dict[str, list[Container]] = {}
            for found in self.podman.containers(self.owner):
                ours.setdefault(found.workload, []).append(found)
        except PodmanError as exc:
            return {w.id: _failed(w, f"cannot list containers: {exc}") for w in workloads}
        round_ = _Round(self.podman, time.monotonic() + self.image_wait_s)
        statuses = {w.id: self._converge(w, ours.pop(w.id, []), round_) for w in workloads}
        for wid in protected:  # an entry the agent can't read: leave its container be
            round_.alive.update(c.id for c in ours.pop(wid, []))
        removed_all = True
        for leftover in (c for group in ours.values() for c in group):
            removed_all &= self._remove(leftover, "its workload is no longer desired", round_)
        self._idle = not workloads and not round_.alive and removed_all
        self.health.keep_only(round_.watched)
        self.load.keep_only(round_.watched)
        self.restarts.keep_only(round_.alive)
        self.images.prune({w.image.digest for w in workloads})
        self.models.prune({m.digest for w in workloads for m in w.models})
        return statuses

    def _converge(self, w: Workload, mine: list[Container], round_: _Round) -> WorkloadStatus:
        current = next(
            (c for c in mine if c.template == w.template_hash and c.name == w.container_name),
            None,
        )
        stale = [c for c in mine if c is not current]
        if current is None:
            return self._create(w, stale, round_)
        for old in stale:
            self._remove(old, "a duplicate of its workload", round_)
        round_.alive.add(current.id)
        if current.state == "running":
            return self._running(w, current.id, round_)
        if current.state == "paused":
            return self._status(w, "unhealthy", "the container is paused", current, "paused")
        return self._restart(w, current, round_)

    def _create(self, w: Workload, stale: list[Container], round_: _Round) -> WorkloadStatus:
        """A new container, from a loaded image; the old one (another template) keeps running
        until the new image is ready, then makes way (it may hold the same host ports)."""
        try:
            ready = self.images.resolve(w.image, round_.present_images(), round_.deadline)
        except PodmanError as exc:
            ready = Readiness("failed", f"cannot list images: {exc}")
        for model in w.models:  # fetched meanwhile, on a thread of their own
            got = self.models.resolve(model, round_.deadline)
            if got.state != "ready" and ready.image_id is not None:
                ready = Readiness(got.state, got.reason)
        if ready.image_id is None:
            round_.alive.update(c.id for c in stale)
            reason = ready.reason
            if stale:
                reason = f"{reason}; the previous container keeps running meanwhile"
            return WorkloadStatus(ready.state, reason, w.template_hash)
        for old in stale:
            if not self._remove(old, "its template changed", round_):
                return _failed(w, f"cannot remove the old container {old.name}")
        try:
            container_id = container.create(
                self.podman,
                w,
                ready.image_id,
                self.owner,
                self.run_args,
                self.scratch,
                self.models.dir,
            )
        except PodmanError as exc:
            return _failed(w, str(exc))
        log.info("workload %s: started container %s", w.id, w.container_name)
        round_.alive.add(container_id)
        return self._running(w, container_id, round_)

    def _restart(self, w: Workload, current: Container, round_: _Round) -> WorkloadStatus:
        """Start a container that is not running; one that ran before counts as a restart,
        with backoff once it keeps exiting."""
        ran = current.state not in NEVER_RAN
        if ran and (wait_s := self.restarts.wait_s(current.id)) > 0:
            exited = f"exited with code {current.exit_code}; next start in {wait_s:.0f}s"
            if self.restarts.crash_looping(current.id):
                recent = self.restarts.recent(current.id)
                reason = (
                    f"the container exits repeatedly ({recent} restarts in "
                    f"{WINDOW_S / 60:.0f} min): {exited}{self._last_log_line(current.id)}"
                )
                return self._status(w, "failed", reason, current, current.state)
            return self._status(w, "starting", exited, current, current.state)
        try:
            container.start(self.podman, current.id)
        except PodmanError as exc:
            return self._status(w, "failed", str(exc), current, current.state)
        if ran:
            self.restarts.record(current.id)
            log.warning(
                "workload %s: restarted %s (exited with code %d)",
                w.id,
                current.name,
                current.exit_code,
            )
        return self._running(w, current.id, round_)

    def _running(self, w: Workload, container_id: str, round_: _Round) -> WorkloadStatus:
        restarts = self.restarts.count(container_id)
        key = f"{container_id}#{restarts}"  # every (re)start is judged and measured afresh
        port, load = w.health_port(), None
        if w.health_check is None or port is None:  # running is all there is to check
            state, reason, health = "healthy", None, ""
        else:
            round_.watched.add(key)
            verdict = self.health.watch(key, w.health_check, port)
            state, reason, health = verdict.state, verdict.reason, verdict.state
        if w.metric is not None and (metric_port := w.metric_port()) is not None:
            round_.watched.add(key)
            load = self.load.watch(key, w.metric, metric_port)
        return WorkloadStatus(
            state, reason, w.template_hash, restarts, w.container_name, "running", health, load
        )

    def _status(
        self, w: Workload, state: str, reason: str, current: Container, container_state: str
    ) -> WorkloadStatus:
        return WorkloadStatus(
            state,
            reason,
            w.template_hash,
            self.restarts.count(current.id),
            current.name,
            container_state,
            "unhealthy" if w.health_check is not None else "",
        )

    def _remove(self, old: Container, why: str, round_: _Round) -> bool:
        try:
            container.remove(self.podman, old.id)
        except PodmanError as exc:
            log.error("cannot remove container %s (%s): %s", old.name, why, exc)
            round_.alive.add(old.id)
            return False
        log.info("removed container %s: %s", old.name, why)
        return True

    def _last_log_line(self, container_id: str) -> str:
        last = self.podman.last_log_line(container_id)
        return f"; last log line: {last[:200]}" if last else ""

    def _log_changes(self, statuses: dict[str, WorkloadStatus]) -> None:
        """A line per change of state (not of reason: a backoff's countdown is no news)."""
        for wid, status in statuses.items():
            before = self.statuses.get(wid)
            if before is None or before.state != status.state:
                log.info("workload %s: %s%s", wid, status.state, _suffix(status.reason))


class _Round:
    """What one pass learns as it goes: the containers that stay, the health checks still
    wanted, and podman's image list (asked for once, and only if some image is needed)."""

    def __init__(self, podman: Podman, deadline: float) -> None:
        self.podman = podman
        self.deadline = deadline
        self.alive: set[str] = set()
        self.watched: set[str] = set()
        self._images: set[str] | None = None

    def present_images(self) -> set[str]:
        if self._images is None:
            self._images = self.podman.image_ids()
        return self._images


def _failed(w: Workload, reason: str) -> WorkloadStatus:
    return WorkloadStatus("failed", reason, w.template_hash)


def _suffix(reason: str | None) -> str:
    return f" ({reason})" if reason else ""
