"""Playbook runs: the hub runs Ansible on its hosts and records everything about it.

A run resolves its `--limit` against the hub's inventory, takes a lock on each target host
(one mutating run per host at a time; check-mode runs take none) in the same transaction
that creates it, and then works in a background thread: pre-flight over SSH, the playbook
per wave of `serial` hosts, events stored as they come, final status and recap, locks
released. Extra vars and the inventory's opened secrets live only in memory and in the run's
private folder while it runs; what is stored has those secrets masked.

A hub that dies mid-run leaves the run `running`; the next start marks it `interrupted`,
kills what is left of its ansible-playbook and releases its locks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.ansible.connection_vars import refuse_in_extravars
from aiorch.ansible.runner import run_playbook
from aiorch.endpoint import CA_FILE
from aiorch.errors import Conflict, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, bundles, clusters, preflight, redaction, targets
from aiorch.hub.services.gpu_acceptance import records_from_stats, save_records
from aiorch.hub.services.inventory import write_run_inventory
from aiorch.hub.services.playbook_sets import PlaybookSet
from aiorch.hub.services.run_events import EventBatcher, error_text, event_row
from aiorch.hub.services.run_history import ACTIVE_STATUSES, decode, get_run
from aiorch.hub.services.run_processes import kill_leftovers

log = logging.getLogger("aiorch.hub.runs")

# Called inside the transaction that finishes a run, with the run's final row; what it
# returns is added to the run's message. Retirement and drift hang off this.
FinishHook = Callable[[sqlite_utils.Database, dict[str, Any]], str | None]


@dataclass(frozen=True)
class RunRequest:
    playbook: str
    limit: str | None = None
    check: bool = False
    diff: bool = False
    serial: int | None = None
    max_fail_ratio: float = 0.0
    extravars: dict[str, Any] = field(default_factory=dict)
    stored_events: tuple[str, ...] | None = None  # statuses of the results kept (None: all)
    playbook_set: str | None = None  # None: "aiorch", the hub's own playbooks


@dataclass
class _Active:
    """A run this process is executing, and how to stop it."""

    ctx: HubContext
    cancel: threading.Event = field(default_factory=threading.Event)
    ended_as: str = "canceled"  # or "interrupted" when the hub itself stops it
    secrets: list[str] = field(default_factory=list)  # masked in everything the run stores
    thread: threading.Thread | None = None


@dataclass
class _Outcome:
    status: str = "failed"
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    preflight: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    gpu_acceptance: dict[str, dict[str, Any]] = field(default_factory=dict)  # by host


_ACTIVE: dict[str, _Active] = {}
_ACTIVE_LOCK = threading.Lock()


# ---- starting ------------------------------------------------------------------------------


def start_run(
    ctx: HubContext,
    req: RunRequest,
    actor: str,
    *,
    kind: str = "provision",
    on_finish: FinishHook | None = None,
) -> dict[str, Any]:
    """Create the run and its host locks in one transaction, then run it in the background."""
    pset, path = targets.resolve_playbook(ctx, req.playbook_set, req.playbook)
    if req.serial is not None and req.serial < 1:
        raise InvalidInput("serial must be at least 1")
    refuse_in_extravars(req.extravars)
    hosts = targets.resolve_limit(ctx.store.read(), req.limit)
    run_id = f"r{uuid.uuid4().hex[:12]}"
    now = ctx.clock()
    row = {
        "id": run_id,
        "kind": kind,
        "playbook": req.playbook,
        "playbook_set": pset.name,
        "playbook_set_digest": pset.digest,
        "limit": req.limit,
        "hosts": json.dumps(hosts),
        "check": int(req.check),
        "diff": int(req.diff),
        "serial": req.serial,
        "max_fail_ratio": req.max_fail_ratio,
        "extravars": json.dumps(redaction.mask_extravars(req.extravars), sort_keys=True),
        "status": "queued",
        "actor": actor,
        "created_at": now,
        "hub_pid": os.getpid(),
    }

    def op(db: sqlite_utils.Database) -> None:
        if not req.check:
            _refuse_busy(db, hosts)
        db.table("runs").insert(row)
        if not req.check:
            db.table("host_locks").insert_all(
                {"host": host, "run_id": run_id, "acquired_at": now} for host in hosts
            )
        detail = {
            "playbook": req.playbook,
            "playbook_set": f"{pset.name}@{pset.digest}",
            "limit": req.limit,
            "check": req.check,
            "hosts": len(hosts),
            "extravars": sorted(req.extravars),
        }
        audit.record(db, actor, f"run.{kind}", f"run:{run_id}", detail, ts=now)

    ctx.store.write(op)
    _launch(ctx, run_id, pset, path, hosts, req, on_finish)
    return get_run(ctx, run_id)


def _refuse_busy(db: sqlite_utils.Database, hosts: Sequence[str]) -> None:
    marks = ",".join("?" * len(hosts))
    busy = list(
        db.query(
            "SELECT l.host, l.run_id, r.playbook, r.actor FROM host_locks l "
            f"JOIN runs r ON r.id = l.run_id WHERE l.host IN ({marks}) ORDER BY l.host",
            list(hosts),
        )
    )
    if busy:
        held = "; ".join(
            f"{b['host']} is locked by run {b['run_id']} ({b['playbook']}, {b['actor']})"
            for b in busy
        )
        raise Conflict(f"{held}: one mutating run per host at a time")


def _launch(
    ctx: HubContext,
    run_id: str,
    pset: PlaybookSet,
    path: Path,
    hosts: list[str],
    req: RunRequest,
    on_finish: FinishHook | None,
) -> None:
    active = _Active(ctx, secrets=redaction.secret_values(req.extravars))
    active.thread = threading.Thread(
        target=_execute,
        args=(ctx, active, run_id, pset, path, hosts, req, on_finish),
        name=f"aiorch-run-{run_id}",
        daemon=True,
    )
    with _ACTIVE_LOCK:
        _ACTIVE[run_id] = active
    active.thread.start()


# ---- executing -----------------------------------------------------------------------------


def _execute(
    ctx: HubContext,
    active: _Active,
    run_id: str,
    pset: PlaybookSet,
    path: Path,
    hosts: list[str],
    req: RunRequest,
    on_finish: FinishHook | None,
) -> None:
    run_dir = ctx.settings.runs_dir / run_id
    outcome = _Outcome()
    batcher: EventBatcher | None = None
    try:
        running = {"status": "running", "started_at": ctx.clock()}
        ctx.store.write(lambda db: db.table("runs").update(run_id, running))
        run_dir.mkdir(mode=0o700, parents=True)
        inventory_path = run_dir / "inventory.yml"
        held = write_run_inventory(ctx, inventory_path)  # the inventory's secrets, opened
        active.secrets = redaction.longest_first([*active.secrets, *held])
        outcome.preflight = preflight.check_inventory(
            inventory_path, hosts, ctx.settings.preflight_timeout_s
        )
        if outcome.preflight:
            _save_preflight(ctx, run_id, outcome.preflight)
        reachable = [host for host in hosts if host not in outcome.preflight]
        if not reachable:
            outcome.messages.append("every host failed pre-flight; nothing was run")
            return
        batcher = EventBatcher(ctx.store, run_id)
        where = (pset, path, inventory_path)
        _run_waves(ctx, active, run_id, where, reachable, req, batcher, outcome)
    except Exception as exc:
        log.exception("run %s stopped by an internal error", run_id)
        reason = redaction.scrub_text(str(exc), active.secrets)
        outcome.status = "failed"
        outcome.messages.append(f"internal error: {reason} (see the hub log)")
    finally:
        # ansible-runner's cancel kills ansible-playbook's process group only; a worker that
        # was running a task lives in its own group and would go on after the locks are gone.
        leftovers = kill_leftovers(run_dir)
        if leftovers:
            log.info("run %s: killed ansible processes left after it ended: %s", run_id, leftovers)
        if batcher is not None:
            batcher.close()
        save_records(ctx, run_id, outcome.gpu_acceptance)
        _finish(ctx, run_id, outcome, on_finish)
        shutil.rmtree(run_dir, ignore_errors=True)
        with _ACTIVE_LOCK:
            _ACTIVE.pop(run_id, None)


def _run_waves(
    ctx: HubContext,
    active: _Active,
    run_id: str,
    where: tuple[PlaybookSet, Path, Path],
    hosts: list[str],
    req: RunRequest,
    batcher: EventBatcher,
    outcome: _Outcome,
) -> None:
    """The playbook once per wave of `serial` hosts; a wave failing more than
    `max_fail_ratio` of its hosts stops the waves after it."""
    pset, path, inventory_path = where
    errors: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        try:
            row = event_row(event, active.secrets)
            if row is not None:
                if req.stored_events is None or row["status"] in req.stored_events:
                    batcher.add(row)
            elif (line := error_text(event, active.secrets)) and line not in errors:
                errors.append(line)
            outcome.gpu_acceptance |= records_from_stats(event, hosts, active.secrets)
        except Exception:  # an odd event must not break the run that sent it
            log.exception("run %s: could not record a %s event", run_id, event.get("event"))

    # The roles install the hub's CA on hosts (apt and pip verify the hub with it), and the
    # site content's keyring and release when there is one.
    hub_vars = {"aiorch_hub_ca_file": str(ctx.settings.data_dir / CA_FILE)}
    hub_vars |= bundles.run_vars(ctx) | clusters.run_vars(ctx)  # and where the Slurm keys lie
    size = req.serial or len(hosts)
    waves = [hosts[i : i + size] for i in range(0, len(hosts), size)]
    statuses = []
    for number, wave in enumerate(waves, start=1):
        if active.cancel.is_set():
            statuses.append("canceled")
            break
        result = run_playbook(
            run_id,
            path,
            inventory_path,
            private_data_dir=inventory_path.parent / f"wave-{number}",
            event_handler=on_event,
            limit=wave,
            check=req.check,
            diff=req.diff,
            forks=ctx.settings.run_forks,
            extravars={**req.extravars, **hub_vars},
            cancel_callback=active.cancel.is_set,
            project_dir=pset.root,
            collections_path=pset.collections,
        )
        outcome.recap.update(result.recap)
        statuses.append(result.status)
        if result.status == "canceled":
            break
        bad = [h for h in wave if _failed(outcome.recap.get(h))]
        if result.status != "successful" and not result.recap:
            bad = wave  # the playbook did not get as far as any host
        if number < len(waves) and len(bad) / len(wave) > req.max_fail_ratio:
            rest = [host for later in waves[number:] for host in later]
            outcome.messages.append(
                f"stopped after wave {number} of {len(waves)} ({len(bad)} of {len(wave)} "
                f"hosts failed); not run: {', '.join(rest)}"
            )
            statuses.append("failed")
            break
    outcome.messages[:0] = errors + _host_summary(outcome.recap)
    if "canceled" in statuses:
        outcome.status = active.ended_as
        if active.ended_as == "interrupted":
            outcome.messages.append("the hub stopped during the run")
    elif all(s == "successful" for s in statuses) and not outcome.preflight:
        outcome.status = "successful"
    else:
        outcome.status = "failed"


def _failed(recap: dict[str, int] | None) -> bool:
    return bool(recap and (recap["failed"] or recap["unreachable"]))


def _host_summary(recap: dict[str, dict[str, int]]) -> list[str]:
    hosts = {s: [h for h, counts in recap.items() if counts[s]] for s in ("failed", "unreachable")}
    return [f"{state}: {', '.join(names)}" for state, names in hosts.items() if names]


def _save_preflight(ctx: HubContext, run_id: str, problems: dict[str, str]) -> None:
    text = json.dumps(problems, sort_keys=True)
    ctx.store.write(lambda db: db.table("runs").update(run_id, {"preflight": text}))


def _finish(ctx: HubContext, run_id: str, outcome: _Outcome, on_finish: FinishHook | None) -> None:
    """Final status, recap and message, locks released, and the caller's hook: one transaction
    (without the hook, should the hook fail, so that locks are never left behind)."""
    if outcome.preflight:
        outcome.messages.append(f"pre-flight failed on {len(outcome.preflight)} host(s)")

    def op(db: sqlite_utils.Database, hook: FinishHook | None) -> None:
        final = {
            "status": outcome.status,
            "finished_at": ctx.clock(),
            "recap": json.dumps(outcome.recap, sort_keys=True),
            "preflight": json.dumps(outcome.preflight, sort_keys=True),
            "message": "; ".join(outcome.messages) or None,
        }
        db.table("runs").update(run_id, final)
        db.execute("DELETE FROM host_locks WHERE run_id = ?", [run_id])
        if hook is not None:
            extra = hook(db, decode(db.table("runs").get(run_id)))
            if extra:
                message = "; ".join([*outcome.messages, extra])
                db.table("runs").update(run_id, {"message": message})
        audit.record(db, "hub", "run.finish", f"run:{run_id}", {"status": outcome.status})

    try:
        ctx.store.write(lambda db: op(db, on_finish))
    except Exception:
        log.exception("run %s: finishing hook failed", run_id)
        outcome.messages.append("the run's follow-up step failed (see the hub log)")
        outcome.status = "failed"
        ctx.store.write(lambda db: op(db, None))


# ---- stopping ------------------------------------------------------------------------------


def cancel_run(ctx: HubContext, run_id: str, actor: str) -> dict[str, Any]:
    run = get_run(ctx, run_id)
    with _ACTIVE_LOCK:
        active = _ACTIVE.get(run_id)
    if run["status"] not in ACTIVE_STATUSES or active is None:
        raise Conflict(f"run {run_id} is {run['status']}, not running in this hub")
    active.cancel.set()
    ctx.store.write(lambda db: audit.record(db, actor, "run.cancel", f"run:{run_id}"))
    return get_run(ctx, run_id)


def wait(run_id: str, timeout: float | None = None) -> None:
    """Block until a run this process executes has finished (no-op for any other run)."""
    with _ACTIVE_LOCK:
        active = _ACTIVE.get(run_id)
    if active is not None and active.thread is not None:
        active.thread.join(timeout)


def stop_all(ctx: HubContext, timeout: float = 20.0) -> None:
    """Hub shutdown: stop every run of `ctx`; they end `interrupted` with locks released."""
    with _ACTIVE_LOCK:
        mine = [a for a in _ACTIVE.values() if a.ctx is ctx]
    for active in mine:
        active.ended_as = "interrupted"
        active.cancel.set()
    for active in mine:
        if active.thread is not None:
            active.thread.join(timeout)
