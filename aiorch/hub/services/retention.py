"""Retention jobs: what the hub stores for history leaves once it is old and nothing uses it.

Each job deletes in small writes (`retention_batch_rows` rows each, at most
`retention_max_batches` of them per run), so the single writer serves agents between them and
a large backlog drains over a few runs instead of stalling it. The audit log is kept whole:
its retention comes with its hash chain.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from aiorch.deploy.rollout import ACTIVE
from aiorch.hub.context import HubContext
from aiorch.hub.services.runs import ACTIVE_STATUSES

# A write deleting at most `limit` rows; returns how many it deleted.
Sweep = Callable[[sqlite_utils.Database, int], int]


def _quoted(states: tuple[str, ...]) -> str:
    """Fixed state names as an SQL list, for a statement built once at import."""
    return ", ".join(f"'{state}'" for state in states)


def sweep_in_batches(ctx: HubContext, sweep: Sweep) -> int:
    """Run `sweep` one write at a time until it finds less than a batch or the run's budget
    of writes is spent; returns the rows deleted."""
    limit, total = ctx.settings.retention_batch_rows, 0
    for _ in range(ctx.settings.retention_max_batches):
        deleted = ctx.store.write(lambda db: sweep(db, limit))
        total += deleted
        if deleted < limit:
            break
    return total


# ---- runs --------------------------------------------------------------------------------------

_EXPIRED_RUNS = (
    f"SELECT id FROM runs WHERE status NOT IN ({_quoted(ACTIVE_STATUSES)}) AND finished_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM host_locks l WHERE l.run_id = runs.id) "
    "AND NOT EXISTS (SELECT 1 FROM drift d WHERE d.run_id = runs.id) "
    "ORDER BY finished_at LIMIT ?"
)


def expire_runs(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: finished runs older than `run_retention_s` go with their events. A run
    still holding a host lock, or the evidence of a host's current drift, stays."""
    cutoff = ctx.clock() - ctx.settings.run_retention_s
    counts = {"runs": 0, "run_events": 0}

    def sweep(db: sqlite_utils.Database, limit: int) -> int:
        deleted = 0
        for (run_id,) in db.execute(_EXPIRED_RUNS, [cutoff, limit]).fetchall():
            events = db.execute(
                "DELETE FROM run_events WHERE run_id = ? AND seq IN "
                "(SELECT seq FROM run_events WHERE run_id = ? ORDER BY seq LIMIT ?)",
                [run_id, run_id, limit - deleted],
            ).rowcount
            counts["run_events"] += events
            deleted += events
            if deleted >= limit:  # this run's remaining events wait for the next write
                break
            counts["runs"] += db.execute("DELETE FROM runs WHERE id = ?", [run_id]).rowcount
            deleted += 1
        return deleted

    sweep_in_batches(ctx, sweep)
    return {k: v for k, v in counts.items() if v}


# ---- series and streams of agents gone ---------------------------------------------------------


# An agent's rows, each statement deleting at most `limit`; a series goes once its rollups have.
_AGENT_ROWS = (
    (
        "series",
        "DELETE FROM series WHERE id IN (SELECT s.id FROM series s WHERE s.agent_id = ? "
        "AND NOT EXISTS (SELECT 1 FROM rollups_1m r WHERE r.series_id = s.id) LIMIT ?)",
    ),
    (
        "streams",
        "DELETE FROM streams WHERE id IN (SELECT t.id FROM streams t WHERE t.agent_id = ? LIMIT ?)",
    ),
)


def _gone_agents(ctx: HubContext) -> list[str]:
    """Agents retired (credential revoked) or silent for longer than `agent_retention_s`."""
    cutoff = ctx.clock() - ctx.settings.agent_retention_s
    rows = ctx.store.read().execute(
        "SELECT a.id, a.revoked_at, COALESCE(a.last_seen, a.enrolled_at) FROM agents a "
        "WHERE EXISTS (SELECT 1 FROM series s WHERE s.agent_id = a.id) "
        "OR EXISTS (SELECT 1 FROM streams t WHERE t.agent_id = a.id) ORDER BY a.id"
    )
    return [
        agent_id
        for agent_id, revoked_at, last_seen in rows
        if revoked_at is not None or (ctx.heartbeats.last_seen(agent_id, last_seen) or 0) < cutoff
    ]


def forget_gone_agents(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: an agent retired or long silent loses its series and streams once the
    telemetry retention has removed their samples and rollups (its history until then stays),
    and `/metrics` forgets latest values of retired agents and those older than
    `latest_stale_s`."""
    gone = _gone_agents(ctx)
    counts = {"series": 0, "streams": 0}

    def sweep(db: sqlite_utils.Database, limit: int) -> int:
        deleted = 0
        for agent_id in gone:
            if db.execute(
                "SELECT 1 FROM streams t JOIN telemetry_batches b ON b.stream_id = t.id "
                "WHERE t.agent_id = ? LIMIT 1",
                [agent_id],
            ).fetchone():
                continue  # samples left: they name this agent's series and streams
            for table, sql in _AGENT_ROWS:
                rows = db.execute(sql, [agent_id, limit - deleted]).rowcount
                counts[table] += rows
                deleted += rows
            # Ids are cached for ingest (which resolves them on this writer thread): a
            # deleted row's id must not be handed out again.
            ctx.series.forget_agent(agent_id)
            ctx.streams.forget_agent(agent_id)
            if deleted >= limit:
                break
        return deleted

    sweep_in_batches(ctx, sweep)
    revoked = {
        row[0]
        for row in ctx.store.read().execute("SELECT id FROM agents WHERE revoked_at IS NOT NULL")
    }
    latest = ctx.latest.forget_agents(revoked)
    latest += ctx.latest.forget_older_than(ctx.clock() - ctx.settings.latest_stale_s)
    return {k: v for k, v in (*counts.items(), ("latest_values", latest)) if v}


# ---- deployment revisions ----------------------------------------------------------------------

_PRUNABLE_REVISIONS = (
    "SELECT deployment, revision FROM ("
    "  SELECT deployment, revision, ROW_NUMBER() OVER "
    "  (PARTITION BY deployment ORDER BY revision DESC) AS newest FROM deployment_revisions"
    ") ranked WHERE newest > ? "
    "AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.name = ranked.deployment "
    "  AND ranked.revision IN (d.revision, d.stable_revision)) "
    "AND NOT EXISTS (SELECT 1 FROM deployment_replicas p WHERE p.deployment = ranked.deployment "
    "  AND p.revision = ranked.revision) "
    "AND NOT EXISTS (SELECT 1 FROM rollouts o WHERE o.deployment = ranked.deployment "
    "  AND ranked.revision IN (o.from_revision, o.to_revision) "
    f"  AND (o.state IN ({_quoted(ACTIVE)}) "
    "  OR o.id = (SELECT MAX(l.id) FROM rollouts l WHERE l.deployment = o.deployment))) "
    "ORDER BY deployment, revision LIMIT ?"
)


def prune_revisions(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: each deployment keeps its newest `revisions_kept` revisions, plus the
    current one, the stable one (the rollback target), every one a replica runs and those
    its latest rollout moves between (what `undo` goes back to); older ones go.

    The newest revision always stays, so a revision number is never handed out twice."""

    def sweep(db: sqlite_utils.Database, limit: int) -> int:
        doomed = db.execute(_PRUNABLE_REVISIONS, [ctx.settings.revisions_kept, limit]).fetchall()
        db.conn.executemany(
            "DELETE FROM deployment_revisions WHERE deployment = ? AND revision = ?", doomed
        )
        return len(doomed)

    deleted = sweep_in_batches(ctx, sweep)
    return {"deployment_revisions": deleted} if deleted else {}
