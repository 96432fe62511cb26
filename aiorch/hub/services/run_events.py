"""A run's events: Ansible's per-host task results, redacted, numbered and written in batches.

The event handler runs on ansible-runner's thread for every event; it must not wait for the
database. Rows are buffered and a flusher thread hands them to the single writer every
`interval` seconds (or sooner once `max_rows` are waiting): one transaction per batch, not
per event.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiorch.hub.services.redaction import scrub, scrub_text
from aiorch.hub.store import Store

log = logging.getLogger("aiorch.hub.runs")

RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


def event_row(event: dict[str, Any], secrets: Sequence[str]) -> dict[str, Any] | None:
    """The stored form of a task result event; None for every other kind of event."""
    kind = RESULT_EVENTS.get(event.get("event", ""))
    if kind is None:
        return None
    data = event.get("event_data") or {}
    res = data["res"] if isinstance(data.get("res"), dict) else {}
    if "changed" in res:
        changed = bool(res["changed"])
    else:  # a no_log result is censored whole, `changed` included; the stdout line still says
        changed = str(event.get("stdout", "")).lstrip().startswith("changed")
    return {
        "ts": _timestamp(event.get("created")),
        "host": data.get("host"),
        "task": scrub_text(str(data.get("task") or ""), secrets),
        "action": data.get("resolved_action") or data.get("task_action"),
        "status": "changed" if kind == "ok" and changed else kind,
        "changed": int(changed),
        "duration": data.get("duration"),
        "res": json.dumps(scrub(res, secrets), sort_keys=True, default=str),
    }


def error_text(event: dict[str, Any], secrets: Sequence[str]) -> str | None:
    """Ansible's own error line (a syntax error, a missing file) from output-only events."""
    if event.get("event") not in ("verbose", "error"):
        return None
    for line in str(event.get("stdout", "")).splitlines():
        if line.strip().startswith(("ERROR!", "[ERROR]")):
            return scrub_text(line.strip(), secrets)
    return None


def _timestamp(created: Any) -> float:
    try:
        return datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        return datetime.now().timestamp()


class EventBatcher:
    """Numbers a run's rows (seq 1, 2, ...) and writes them in batches until `close()`."""

    def __init__(
        self, store: Store, run_id: str, *, interval: float = 0.2, max_rows: int = 200
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._interval = interval
        self._max_rows = max_rows
        self._rows: list[dict[str, Any]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop, name=f"aiorch-run-{run_id}-events", daemon=True
        )
        self._thread.start()

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            self._rows.append({"run_id": self._run_id, "seq": self._seq, **row})
            if len(self._rows) >= self._max_rows:
                self._wake.set()

    def close(self) -> None:
        """Write what is left; every row added before is committed when this returns."""
        self._closed = True
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            closing = self._closed
            self._flush()
            if closing:
                return

    def _flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            self._store.write(lambda db: db.table("run_events").insert_all(rows))
        except Exception:
            log.exception("run %s: lost %d events", self._run_id, len(rows))
