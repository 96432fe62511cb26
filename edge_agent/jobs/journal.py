"""A job attempt's journal on the host: the truth about it while the hub is away.

One private JSON file per attempt, `state_dir/jobs/<attempt>.json`, rewritten atomically on
every change, with the attempt's log beside it (`<attempt>.log`, its last LOG_KEEP_BYTES).
The report sent to the hub is derived from the journal alone, and `seq` moves only when that
report's content changes: a restarted agent, or a report sent again after a cut, carries the
same seq for the same content, so the hub applies it once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_agent.contract.job import (
    FINAL_AGENT_STATES,
    LOG_TAIL_BYTES,
    Artifact,
    JobReport,
    job_report_entry,
)
from edge_agent.state import read_json, write_private, write_private_bytes

LOG_KEEP_BYTES = 1 << 20  # the end of a job's log kept on disk


@dataclass
class ArtifactRecord:
    """One artifact taken out of the container; `uploaded` once the hub has it checked."""

    path: str
    sha256: str
    size: int
    location: str  # "hub" or "site"
    local: str  # where the copy lies on this host
    uploaded: bool = False

    def artifact(self) -> Artifact:
        site = self.local if self.location == "site" else None
        return Artifact(self.path, self.sha256, self.size, self.location, site)


@dataclass
class Journal:
    attempt: str
    state: str = "pending"
    seq: int = 0
    reason: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_bytes: int = 0
    # Why the agent stopped the container ("stopped" or "timed_out"), and when it sent SIGTERM.
    stopping: str | None = None
    stop_sent_at: float | None = None
    notes: list[str] = field(default_factory=list)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    # When the hub stopped asking for the attempt (host clock); pruned a day later.
    undesired_since: float | None = None
    fenced: bool = False  # dropped by the hub before it ended: never reported again
    reported: str = ""  # the hash of the report content `seq` belongs to

    @property
    def final(self) -> bool:
        return self.state in FINAL_AGENT_STATES

    @property
    def settled(self) -> bool:
        """Final, and every artifact bound for the hub is there: the report may say so."""
        return self.final and all(a.uploaded for a in self.artifacts if a.location == "hub")

    def move(self, state: str, now: float, reason: str | None = None) -> None:
        if state != self.state:
            self.transitions.append({"from": self.state, "to": state, "at": now, "reason": reason})
        self.state, self.reason = state, reason

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


class JournalStore:
    """The journals under `state_dir/jobs/`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, attempt: str) -> Path:
        return self.dir / f"{attempt}.json"

    def log_path(self, attempt: str) -> Path:
        return self.dir / f"{attempt}.log"

    def load(self, attempt: str) -> Journal | None:
        """The journal, or None if there is none (or it can't be read: then it starts over)."""
        data = read_json(self.path(attempt))
        if data is None:
            return None
        try:
            data["artifacts"] = [ArtifactRecord(**a) for a in data.get("artifacts", [])]
            return Journal(**{f.name: data[f.name] for f in fields(Journal) if f.name in data})
        except TypeError:
            return None

    def all(self) -> list[Journal]:
        found = (self.load(p.stem) for p in sorted(self.dir.glob("*.json")))
        return [j for j in found if j is not None]

    def save(self, journal: Journal) -> None:
        write_private(self.path(journal.attempt), asdict(journal))

    def save_log(self, attempt: str, tail: bytes) -> None:
        write_private_bytes(self.log_path(attempt), tail[-LOG_KEEP_BYTES:])

    def drop(self, attempt: str) -> None:
        self.path(attempt).unlink(missing_ok=True)
        self.log_path(attempt).unlink(missing_ok=True)

    def report(self, journal: Journal) -> dict[str, Any]:
        """The journal's report for the check-in; a new content takes the next seq (saved)."""
        shown = journal if journal.settled or not journal.final else _withheld(journal)
        report = JobReport(
            attempt=journal.attempt,
            seq=0,
            state=shown.state,
            reason=_reason(shown),
            exit_code=shown.exit_code,
            started_at=journal.started_at,
            finished_at=shown.finished_at,
            log_tail=self._log_tail(journal.attempt),
            log_bytes=journal.log_bytes,
            artifacts=tuple(a.artifact() for a in shown.artifacts),
        )
        entry = job_report_entry(report)
        digest = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
        if digest != journal.reported:
            journal.seq, journal.reported = journal.seq + 1, digest
            self.save(journal)
        return {**entry, "seq": journal.seq}

    def _log_tail(self, attempt: str) -> str:
        """The log's end, at most LOG_TAIL_BYTES once encoded (a cut character is dropped)."""
        try:
            with self.log_path(attempt).open("rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - LOG_TAIL_BYTES))
                data = fh.read()
        except FileNotFoundError:
            return ""
        text = data.decode(errors="replace")
        encoded = text.encode()
        return (
            encoded[-LOG_TAIL_BYTES:].decode(errors="ignore") if len(encoded) > len(data) else text
        )


def _withheld(journal: Journal) -> Journal:
    """Until the hub holds its artifacts the attempt reads as running: a final report is
    applied once, so it must not go out with artifacts missing."""
    pending = sum(1 for a in journal.artifacts if a.location == "hub" and not a.uploaded)
    shown = Journal(journal.attempt, state="running", notes=list(journal.notes))
    shown.reason = f"ended ({journal.state}); uploading {pending} artifact(s) to the hub"
    return shown


def _reason(journal: Journal) -> str | None:
    parts = [p for p in (journal.reason, *journal.notes) if p]
    return "; ".join(parts)[:2000] or None
