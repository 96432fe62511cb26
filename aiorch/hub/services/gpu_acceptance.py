"""Hosts' GPU acceptance records (issue 15 part 4): "only accepted machines take workloads".

gpu_acceptance.yml's role returns each host's record (what `aiorch-agent gpu-acceptance`
prints) with set_stats, which ansible-runner hands over in the `playbook_on_stats` event's
`artifact_data`. The hub keeps the newest record per host, audits a change of verdict, shows
it with the host, and placement keeps GPU work off a host whose latest record failed. Stats
the hub cannot use (not a dict, a host the run did not target, a record without a verdict)
are logged and dropped: they come from a playbook, and must never fail the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from typing import Any

import sqlite_utils

from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, redaction

log = logging.getLogger("aiorch.hub.gpu_acceptance")

STATS_KEY = "aiorch_gpu_acceptance"  # the role's set_stats key: {inventory_hostname: record}
MAX_RECORD = 1 << 20  # bytes of one record's JSON; a real one is a few KiB per GPU
SHOWN_FAILURES = 3  # failures named in a placement refusal; the host shows all of them


def records_from_stats(
    event: dict[str, Any], hosts: Collection[str], secrets: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """The usable records a `playbook_on_stats` event carries for `hosts` (the run's), with
    the run's secrets masked; {} for every other event."""
    if event.get("event") != "playbook_on_stats":
        return {}
    data = event.get("event_data")
    stats = data.get("artifact_data") if isinstance(data, dict) else None
    if not isinstance(stats, dict) or STATS_KEY not in stats:
        return {}
    given = stats[STATS_KEY]
    if not isinstance(given, dict):
        log.warning("ignoring %s stats: a %s, not a mapping of hosts", STATS_KEY, _kind(given))
        return {}
    records = {}
    for host, record in given.items():
        problem = _problem(host, record, hosts)
        if problem is None:
            records[host] = redaction.scrub(record, tuple(secrets))
        else:
            log.warning("ignoring the GPU acceptance record of %r: %s", host, problem)
    return records


def _problem(host: Any, record: Any, hosts: Collection[str]) -> str | None:
    if not isinstance(host, str) or host not in hosts:
        return "not a host of this run"
    if not isinstance(record, dict):
        return f"a {_kind(record)}, not a record"
    if not isinstance(record.get("accepted"), bool):
        return "it has no accepted: true/false"
    if len(json.dumps(record, default=str)) > MAX_RECORD:
        return f"it is over {MAX_RECORD >> 10} KiB"
    return None


def _kind(value: Any) -> str:
    return type(value).__name__


def save_records(ctx: HubContext, run_id: str, records: dict[str, dict[str, Any]]) -> None:
    """Store `records` (host: record) from run `run_id`, one transaction; a newer stored record
    wins. Logged, never raised: the run's own outcome must still be written after this."""
    if not records:
        return
    now = ctx.clock()
    try:
        ctx.store.write(lambda db: _store(db, run_id, records, now))
    except Exception:
        log.exception("run %s: lost the GPU acceptance records of %s", run_id, sorted(records))


def _store(
    db: sqlite_utils.Database, run_id: str, records: dict[str, dict[str, Any]], now: float
) -> None:
    for host, record in sorted(records.items()):
        accepted = record["accepted"]
        before = db.execute(
            "SELECT accepted, recorded_at FROM gpu_acceptance WHERE host = ?", [host]
        ).fetchone()
        if before is not None and before[1] > now:
            continue  # a newer record (a later run, under a clock set back) stays
        db.execute(
            "INSERT INTO gpu_acceptance (host, accepted, record, run_id, recorded_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET accepted = excluded.accepted, "
            "record = excluded.record, run_id = excluded.run_id, "
            "recorded_at = excluded.recorded_at",
            [host, int(accepted), json.dumps(record, sort_keys=True, default=str), run_id, now],
        )
        if before is None or bool(before[0]) != accepted:
            detail = {
                "accepted": accepted,
                "was": None if before is None else bool(before[0]),
                "backend": str(record.get("backend")),
                "failures": len(_failures(record)),
                "run": run_id,
            }
            audit.record(db, "hub", "host.gpu_acceptance", f"host:{host}", detail, ts=now)


def _failures(record: dict[str, Any]) -> list[str]:
    failures = record.get("failures")
    return [str(f) for f in failures] if isinstance(failures, list) else []


def summary(db: sqlite_utils.Database, host: str) -> dict[str, Any] | None:
    """What a host's detail shows of its latest record; None when it has none."""
    row = db.execute(
        "SELECT accepted, record, run_id, recorded_at FROM gpu_acceptance WHERE host = ?", [host]
    ).fetchone()
    if row is None:
        return None
    record = json.loads(row[1])
    backend = record.get("backend")
    return {
        "accepted": bool(row[0]),
        "backend": backend,
        "simulated": bool(record.get("simulated", str(backend).startswith("simulated"))),
        "gpus": len(record["gpus"]) if isinstance(record.get("gpus"), list) else None,
        "failures": _failures(record),
        "checked_at": record.get("checked_at"),
        "recorded_at": row[3],
        "run_id": row[2],
    }


def refusals(db: sqlite_utils.Database) -> dict[str, str]:
    """Why each host whose latest record failed may take no GPU work, by host (placement's
    `HostView.gpu_acceptance_failed`). Hosts without a record are not listed."""
    out = {}
    for host, text in db.execute("SELECT host, record FROM gpu_acceptance WHERE accepted = 0"):
        failures = _failures(json.loads(text)) or ["no failure named"]
        more = len(failures) - SHOWN_FAILURES
        listed = "; ".join(failures[:SHOWN_FAILURES]) + (f"; and {more} more" if more > 0 else "")
        out[host] = f"gpu acceptance failed on {host}: {listed}"
    return out
