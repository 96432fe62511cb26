"""Telemetry batches the hub refused for good, kept beside the outbox for the operator to read.
Only the newest few stay, so a hub that refuses every batch costs a bounded amount of disk."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.outbox import Pending
from edge_agent.state import write_private

log = logging.getLogger("aiorch.agent")

KEEP = 10


def keep_refused(directory: Path, batch: Pending, reason: str) -> Path | None:
    """Write `batch` and the hub's `reason` to `directory`; the path, or None if the disk
    would not take it (the batch is dropped either way: the outbox must move on)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = directory / f"{stamp}-{batch.epoch}-{batch.seq_start}-{batch.seq_end}.json"
    try:
        write_private(path, {"reason": reason, "batch": asdict(batch)})
        for old in sorted(directory.glob("*.json"))[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot keep the refused batch in %s: %s", directory, exc)
        return None
    return path
