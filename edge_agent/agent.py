"""The agent's main loop: check in, keep the desired state, run its workloads, send telemetry,
and keep going when the hub is away (the last desired state and unsent samples are on disk)."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edge_agent import __version__
from edge_agent.backoff import Schedule
from edge_agent.client import HubClient, HubRefused, HubUnavailable
from edge_agent.collectors import default_collectors
from edge_agent.collectors.workloads import WorkloadCollector
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.contract.model import ModelFile, ModelRef
from edge_agent.contract.workload import Image
from edge_agent.facts import collect_facts, facts_hash
from edge_agent.gpu import GpuBackend, open_gpu_backend
from edge_agent.jobs import JobRunner
from edge_agent.outbox import Outbox, Pending
from edge_agent.power import PowerControl
from edge_agent.refused import keep_refused
from edge_agent.state import AgentState
from edge_agent.trouble import Trouble
from edge_agent.trust import NotEnrolled, Trust, enroll_with_pin
from edge_agent.workloads import Podman, Reconciler
from edge_agent.workloads.download import Transfer, download

log = logging.getLogger("aiorch.agent")

# Refusals about the agent itself, not about what it sent: no batch is to blame for them.
SENDER_REFUSED = frozenset({401, 403, 404})
REENROLL = (
    "re-enroll this host with `aiorch-agent enroll` (a token from `aiorch enroll-token create`)"
)


def refusal_advice(status: int) -> str:
    """What the operator should do about a check-in the hub refused with `status`."""
    if status in SENDER_REFUSED:
        return f"credential refused ({status}): {REENROLL}"
    upgrade = f"install the agent version that matches the hub (this is {__version__})"
    if status == 413:
        return f"check-in too large (413): raise the hub's max_body_bytes or {upgrade}"
    return f"check-in not understood ({status}): {upgrade}"


def _gpu_backend(config: AgentConfig) -> GpuBackend:
    try:
        return open_gpu_backend(config.gpu_backend)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# Enrollment happens once, by hand or from a playbook, and the hub signs a certificate for it:
# it may wait longer than a check-in (request_timeout_s) for a busy hub before it gives up.
ENROLL_TIMEOUT_S = 60.0


def enroll(config: AgentConfig, hub_url: str, token: str) -> dict[str, Any]:
    """Trade an enrollment token (with the hub's CA pin), a CSR and this host's facts for the
    agent's own certificate."""
    gpus = _gpu_backend(config)
    try:
        facts = collect_facts(gpus)
    finally:
        gpus.close()
    timeout_s = max(config.request_timeout_s, ENROLL_TIMEOUT_S)
    answer = enroll_with_pin(config.state_dir, hub_url, token, facts, timeout_s)
    state = AgentState(config.state_dir)
    state.save_credential(hub_url, answer["agent_id"], answer["site"])
    state.save_facts_hash(facts_hash(facts))
    shown = ("agent_id", "site", "host", "not_after")
    return {k: answer[k] for k in shown}


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.state = AgentState(config.state_dir)
        cred = self.state.credential()
        if cred is None:
            raise NotEnrolled(
                f"not enrolled: nothing in {config.state_dir}; run 'aiorch-agent enroll' first"
            )
        self._use(cred)
        self.outbox = Outbox(
            config.state_dir / "outbox.db",
            max_samples=config.outbox_max_samples,
            max_bytes=config.outbox_max_bytes,
            max_age_s=config.outbox_max_age_s,
        )
        self.gpus = _gpu_backend(config)
        self.collectors = default_collectors(self.gpus)
        self.workload_telemetry = next(
            c for c in self.collectors.collectors if isinstance(c, WorkloadCollector)
        )
        podman = Podman(config.podman_args)
        self.workloads = Reconciler(
            config.state_dir,
            podman,
            config.podman_run_args,
            fetch=self.fetch_image,
            model_cache=config.model_cache,
            fetch_model_file=self.fetch_model_file,
        )
        # Jobs share podman and the image cache (one copy of each image) with the workloads.
        self.jobs = JobRunner(
            config.state_dir,
            podman,
            self.workloads.images,
            self.workloads.models,
            config.podman_run_args,
            upload=self.upload_artifact,
        )
        self.power = PowerControl(config.state_dir)
        # The last pass's report, sent with the next check-in.
        self.report: dict[str, Any] | None = None
        self.schedule = Schedule(max_backoff_s=config.max_backoff_s)
        # While the hub is away: when to try it again (monotonic; 0 when it answered last).
        self.retry_at = 0.0
        self.started = time.monotonic()
        self.refusals = Trouble(log)  # check-ins the hub refuses, logged once
        self.refused_batches = Trouble(log)  # telemetry batches it refuses, logged once

    def close(self) -> None:
        self.workloads.close()
        self.trust.close()
        self.outbox.close()
        self.collectors.close()
        self.gpus.close()

    def checkin(self) -> float | None:
        """One heartbeat; stores a new desired state if the hub has one; returns the interval."""
        facts = collect_facts(self.gpus, self.workloads.models.held)
        digest = facts_hash(facts)
        changed_facts = digest != self.state.facts_hash()
        desired = self.state.desired()
        body = {
            "agent_version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "facts_hash": digest,
            "applied_revision": desired["revision"],
            "facts": facts if changed_facts else None,
            "report": self.report,
        }
        reply = self.hub.checkin(self.agent_id, body, desired["revision"])
        self.keep_trusted()
        if changed_facts:
            self.state.save_facts_hash(digest)
        if reply.changed and reply.document is not None and reply.revision != desired["revision"]:
            log.info("desired state revision %s -> %s", desired["revision"], reply.revision)
            self.state.save_desired(reply.revision, reply.document)
        return reply.poll_interval_s

    def keep_trusted(self) -> None:
        """After an accepted check-in: renew, fetch new CAs, check the clock. A failure here is
        for the next round to retry; the check-in itself went through."""
        try:
            self.trust.accepted(self.hub.news)
        except (HubUnavailable, HubRefused) as exc:
            log.warning("certificate renewal deferred: %s", exc)

    @property
    def hub(self) -> HubClient:
        return self.trust.hub

    def fetch_image(self, image: Image, dest: Path) -> None:
        """Download an image archive for the reconciler (it runs on its fetch thread)."""
        path = f"/agents/{self.agent_id}/images/{image.digest}"
        download(self.hub, path, dest, image.hex, image.size or None)

    def fetch_model_file(self, model: ModelRef, entry: ModelFile, dest: Path) -> Transfer:
        """Download one model file for the reconciler (on the model cache's thread)."""
        path = f"/agents/{self.agent_id}/models/{model.digest}/files/{quote(entry.path)}"
        return download(self.hub, path, dest, entry.sha256, entry.size)

    def upload_artifact(self, attempt: str, sha256: str, path: Path) -> None:
        """Put a finished job's artifact in the hub's store (for the job runner)."""
        self.hub.upload_artifact(self.agent_id, attempt, sha256, path)

    def reconcile(self) -> None:
        """Converge the jobs and workloads on the desired state on disk, whatever the hub is
        doing. Jobs go first: they name the images the workloads' pass must not prune."""
        desired = self.state.desired()
        jobs: dict[str, Any] | None = None
        try:
            jobs = self.jobs.run(desired["document"])
        except Exception:  # a bug here must not stop check-ins, or the fix never arrives
            log.exception("job runner failed")
        try:
            self.report = self.workloads.reconcile(desired["revision"], desired["document"])
            if jobs:
                self.report["jobs"] = jobs
        except Exception:
            log.exception("workload reconcile failed")
        # Last: a reboot asked for goes after this pass's work is on disk.
        try:
            self.power.apply(desired["document"])
        except Exception:
            log.exception("power request failed")
        power = self.power.report()
        if power is not None and self.report is not None:
            self.report["power"] = power
        self.workload_telemetry.statuses = self.workloads.container_statuses()

    def flush_telemetry(self, max_batches: int | None = None) -> int:
        """Send the oldest samples first; a batch leaves the outbox only once acknowledged.
        At most `upload_max_batches_per_round` batches and about `upload_max_seconds_per_round`
        per call, so a backlog after an outage drains over several rounds instead of delaying
        the next check-in. Returns the number of samples sent."""
        limit = self.config.upload_max_batches_per_round if max_batches is None else max_batches
        deadline = time.monotonic() + self.config.upload_max_seconds_per_round
        sent = 0
        for _ in range(limit):
            batch = self.outbox.pending(self.config.telemetry_batch_size)
            if batch is None:
                break
            try:
                self.hub.upload(self.agent_id, asdict(batch))
            except HubRefused as exc:
                if exc.status in SENDER_REFUSED:
                    raise
                self.set_aside(batch, exc)
                continue
            self.outbox.ack(batch)
            sent += len(batch.samples)
            if time.monotonic() >= deadline:
                break
        return sent

    def set_aside(self, batch: Pending, refusal: HubRefused) -> None:
        """A batch the hub will never take (it said so with a 4xx) must not block the samples
        behind it: it is kept aside for the operator, and its samples count as dropped, which
        the next batch tells the hub."""
        kept = keep_refused(self.config.state_dir / "refused-telemetry", batch, str(refusal))
        self.outbox.drop(batch)
        self.refused_batches.failing(
            str(refusal.status),
            "telemetry batch %s:%d-%d refused, %d samples counted as dropped (%s): %s",
            batch.epoch,
            batch.seq_start,
            batch.seq_end,
            len(batch.samples),
            f"kept in {kept}" if kept else "not kept",
            refusal,
        )

    def round(self) -> float | None:
        """Check in first (a slow collector or a backlog must not make the agent look offline),
        then reconcile workloads, then collect into the outbox, then upload what the round
        allows. Workloads are reconciled from the desired state on disk even when the check-in
        fails, so with the hub away they keep running and crashed ones are restarted; their
        report goes with the next check-in. Raises HubUnavailable if the hub can't be reached;
        the round's samples are in the outbox by then, or HubRefused if the hub refused it."""
        try:
            interval = self.checkin()
        finally:
            self.local_round()
        self.flush_telemetry()
        return interval

    def local_round(self) -> None:
        """What a round does without the hub: converge the workloads, collect into the outbox."""
        self.reconcile()
        self.outbox.append(self.collectors.collect(time.time()))

    def cycle(self) -> float:
        """One round, absorbing hub outages. Returns the seconds to wait before the next.

        Check-ins back off while the hub is away, but the rounds in between still run locally
        at the usual interval: a workload that crashes during a long outage is restarted
        within one interval, not after the next (up to `max_backoff_s`) try at the hub."""
        if time.monotonic() < self.retry_at:
            self.local_round()
            return self._until_retry()
        if self.refusals.active:
            self.reload_credential()
        try:
            interval = self.round()
        except HubUnavailable as exc:
            delay = self.schedule.failed(exc.retry_after_s)
            log.warning("%s; next try in %.1fs", exc, delay)
            self.retry_at = time.monotonic() + delay
            return self._until_retry()
        except HubRefused as refusal:
            told = refusal
            try:
                if self.trust.refused(refusal):
                    return 0.0  # a renewed certificate (or the previous one) to try at once
            except HubRefused as proof_refused:  # its reason is the one to tell
                told = proof_refused
            return self._refused(told)
        self.retry_at = 0.0
        self.refusals.over("check-in accepted again")
        return self.schedule.succeeded(interval)

    def _refused(self, refusal: HubRefused) -> float:
        """Say once what to do about a refusal, and back off; the workloads keep running."""
        self.retry_at = time.monotonic() + self.schedule.failed()
        self.refusals.failing(
            str(refusal.status),
            "%s [hub: %s]. Until then the agent keeps running its workloads from desired "
            "revision %d and retries with backoff (at most every %.0fs).",
            refusal_advice(refusal.status),
            refusal.detail,
            self.state.desired()["revision"],
            self.schedule.max_backoff_s,
        )
        return self._until_retry()

    def _use(self, cred: dict[str, Any]) -> None:
        """Talk to the hub as the agent that `cred` (credential.json) names."""
        self.agent_id: str = cred["agent_id"]
        hub_url = self.config.hub_url or cred["hub_url"]
        self.trust = Trust(self.state.dir, hub_url, self.agent_id, self.config.request_timeout_s)

    def reload_credential(self) -> None:
        """After a refusal: a host re-enrolled meanwhile (`aiorch-agent enroll`) has a new
        identity on disk, which the running agent takes up without a restart."""
        cred = self.state.credential()
        if cred is None or cred["agent_id"] == self.agent_id:
            return
        self.trust.close()
        self._use(cred)
        log.warning(
            "a new credential is in %s: checking in as agent %s", self.state.dir, self.agent_id
        )

    def _until_retry(self) -> float:
        """Seconds to the next round while the hub is away: the next try, or one interval."""
        return max(0.0, min(self.retry_at - time.monotonic(), self.schedule.interval_s))

    def run_forever(self) -> None:
        # Parsed netlink messages (pyroute2) are reference cycles: left to the generational
        # collector they pile up between rounds and fragment the heap, about 4 MB more RSS.
        # Collecting after every round is cheap (2 ms) once start-up's objects are frozen.
        gc.freeze()
        while True:
            delay = self.cycle()
            gc.collect()
            time.sleep(delay)
