"""A job's states and the transitions between them, as one table.

`queued → admitted → scheduled → starting → running → succeeded | failed | cancelled |
timed_out`, plus `preempted` and `node_lost`, which go back to `queued` while retries last
(a new attempt each time). Every change goes through `check`, so a late or replayed report can
never move a job backwards, and the table is what the property test drives.
"""

from __future__ import annotations

from aiorch.errors import Conflict

QUEUED, ADMITTED, SCHEDULED, STARTING, RUNNING = (
    "queued",
    "admitted",
    "scheduled",
    "starting",
    "running",
)
SUCCEEDED, FAILED, CANCELLED, TIMED_OUT = "succeeded", "failed", "cancelled", "timed_out"
PREEMPTED, NODE_LOST = "preempted", "node_lost"

TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, TIMED_OUT})
# States in which an attempt holds GPUs on a host (the ledger counts them with deployments').
HOLDING = frozenset({SCHEDULED, STARTING, RUNNING})
STATES = (
    QUEUED, ADMITTED, SCHEDULED, STARTING, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT,
    PREEMPTED, NODE_LOST,
)  # fmt: skip

_ENDS = {FAILED, CANCELLED, TIMED_OUT}
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({ADMITTED, CANCELLED, FAILED}),
    ADMITTED: frozenset({SCHEDULED, QUEUED, CANCELLED}),
    # `→ queued` from a holding state: an error (or a failure to start) that retry covers.
    SCHEDULED: frozenset({STARTING, RUNNING, SUCCEEDED, NODE_LOST, PREEMPTED, QUEUED} | _ENDS),
    STARTING: frozenset({RUNNING, SUCCEEDED, NODE_LOST, PREEMPTED, QUEUED} | _ENDS),
    RUNNING: frozenset({SUCCEEDED, NODE_LOST, PREEMPTED, QUEUED} | _ENDS),
    PREEMPTED: frozenset({QUEUED, FAILED, CANCELLED}),
    NODE_LOST: frozenset({QUEUED, FAILED, CANCELLED, RUNNING, SUCCEEDED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    TIMED_OUT: frozenset(),
}


def allowed(before: str, after: str) -> bool:
    return after in TRANSITIONS.get(before, frozenset())


def check(before: str, after: str) -> None:
    """Raise Conflict unless `before → after` is in the table."""
    if not allowed(before, after):
        raise Conflict(f"a job cannot go from {before} to {after}")
