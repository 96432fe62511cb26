"""`aiorch audit verify`: recompute the audit chain from the database file and check every
checkpoint we can find (the database's, the hub's checkpoints file, agent-held copies) against
it and against the hub's public audit key.

It reads the SQLite file read-only and imports no server code, so it runs beside a live hub,
on a copy, or on another machine with just the data dir's files.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from aiorch.audit_chain import CHECKPOINTS_FILE, GENESIS, PUBLIC_KEY_FILE, b64, origin, row_hash
from aiorch.errors import UserError
from edge_agent.contract.audit import Checkpoint, contradiction, parse_checkpoint, signed_by
from edge_agent.contract.fields import ContractError

_ROWS = (
    "SELECT id AS seq, ts, actor, action, target, detail, prev_hash, hash FROM audit_log "
    "ORDER BY id"
)
_STORED = "SELECT origin, size, root, timestamp, signature FROM audit_checkpoints ORDER BY size"


@dataclass
class Report:
    rows: int = 0
    head: str | None = None  # base64 chain hash of the newest row
    checkpoints: int = 0  # checkpoints that verified
    chain_broken: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "head": self.head,
                "checkpoints_verified": self.checkpoints, "problems": self.problems}  # fmt: skip


def verify(db_path: Path, data_dir: Path, held: Sequence[Path] = ()) -> Report:
    """Check the chain in `db_path` and every checkpoint: the database's, `data_dir`'s
    checkpoints file and the `held` files (agent copies)."""
    key = _public_key(data_dir / PUBLIC_KEY_FILE)
    report = Report()
    with closing(_open(db_path)) as db:
        found = [("database", cp) for cp in _stored(db)]
        found += _from_file(data_dir / CHECKPOINTS_FILE, report, required=False)
        for path in held:
            found += _from_file(path, report, required=True)
        hashes = _walk_chain(db, {cp.size for _, cp in found}, report)
    last = max(hashes, default=0)
    authentic = []
    for source, checkpoint in found:
        problem = _forged(checkpoint, key)
        if problem is None:
            authentic.append(checkpoint)
            problem = _against_chain(checkpoint, hashes, last)
        if problem is None:
            report.checkpoints += 1
        else:
            report.problems.append(f"{source}: {checkpoint.describe()} {problem}")
    report.problems += _contradictions(authentic)
    return report


def _walk_chain(db: sqlite3.Connection, sizes: set[int], report: Report) -> dict[int, bytes]:
    """Recompute every row's hash; note the first row that breaks the chain. Returns the
    recomputed hash at each checkpoint size and at the newest row."""
    hashes: dict[int, bytes] = {}
    seq, prev, before_prev = 0, GENESIS, GENESIS
    for row in _rows(db):
        expected_prev, stored_prev = prev, row["prev_hash"]
        try:
            digest = row_hash(expected_prev, row)
        except (ValueError, rfc8785.CanonicalizationError) as exc:
            digest = bytes(32)
            _first(report, f"seq {row['seq']}: cannot be hashed ({exc})")
        if stored_prev != expected_prev.hex():
            if row["seq"] != seq + 1:
                jump = f"goes from seq {seq} to" if seq else "starts at"
                _first(report, f"seq {seq + 1}: missing (the chain {jump} seq {row['seq']})")
            elif stored_prev == before_prev.hex():
                _first(report, f"seq {seq}: inserted (seq {row['seq']} follows seq {seq - 1} "
                               "in the chain)")  # fmt: skip
            else:
                _first(report, f"seq {row['seq']}: does not follow seq {seq} (its prev_hash "
                               "differs): rows were reordered or changed")  # fmt: skip
        elif row["hash"] != digest.hex():
            _first(report, f"seq {row['seq']}: its hash does not match its content: the row "
                           "was changed")  # fmt: skip
        seq, prev, before_prev = row["seq"], digest, prev
        if seq in sizes:
            hashes[seq] = digest
        report.rows += 1
    if seq:
        hashes[seq] = prev
        report.head = b64(prev)
    return hashes


def _first(report: Report, problem: str) -> None:
    """Only the first broken row is named: every row after it fails as a consequence."""
    if not report.chain_broken:
        report.chain_broken = True
        report.problems.append(problem)


def _forged(cp: Checkpoint, key: Ed25519PublicKey) -> str | None:
    expected = origin(key)
    if cp.origin != expected:
        return f"is for log {cp.origin}, not this hub's {expected}"
    if not signed_by(cp, key):
        return f"is not signed by this hub's audit key ({PUBLIC_KEY_FILE}): forged"
    return None


def _against_chain(cp: Checkpoint, hashes: dict[int, bytes], last: int) -> str | None:
    if cp.size > last:
        return (f"covers seq {cp.size} but the log ends at seq {last}: the database was "
                "rolled back or its newest rows deleted")  # fmt: skip
    if cp.size not in hashes:
        return f"names seq {cp.size}, which is not in the log"
    if b64(hashes[cp.size]) != cp.root:
        return f"does not match the chain at seq {cp.size}: history was rewritten"
    return None


def _contradictions(checkpoints: list[Checkpoint]) -> list[str]:
    """Signed checkpoints taken in time order must only grow and never disagree."""
    problems, newest = [], None
    for cp in sorted(set(checkpoints), key=lambda c: (c.timestamp, c.size)):
        if newest is not None:
            problem = contradiction(newest, cp)
            if problem is not None:
                problems.append(problem)
                continue
        if newest is None or cp.size >= newest.size:
            newest = cp
    return problems


def _public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"no audit public key at {path}: is this the hub's data dir?") from None
    except ValueError as exc:
        raise UserError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"{path} is not an Ed25519 public key")
    return key


def _open(db_path: Path) -> sqlite3.Connection:
    if not db_path.is_file():
        raise UserError(f"no hub database at {db_path}")
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    columns = {row["name"] for row in db.execute("PRAGMA table_info(audit_log)")}
    if "hash" not in columns:
        db.close()
        raise UserError(f"{db_path} has no audit chain yet: start the hub once to migrate it")
    return db


def _rows(db: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    for row in db.execute(_ROWS):
        yield dict(row)


def _stored(db: sqlite3.Connection) -> list[Checkpoint]:
    return [Checkpoint(*row) for row in db.execute(_STORED)]


def _from_file(path: Path, report: Report, *, required: bool) -> list[tuple[str, Checkpoint]]:
    """Checkpoints in a file: one JSON object (an agent's copy) or JSON lines (the hub's)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise UserError(f"no checkpoint file at {path}") from None
        return []
    try:
        documents = [(str(path), json.loads(text))]
    except ValueError:
        lines = enumerate(text.splitlines(), 1)
        documents = [(f"{path} line {n}", line) for n, line in lines if line.strip()]
    found = []
    for source, document in documents:
        try:
            data = json.loads(document) if isinstance(document, str) else document
            found.append((source, parse_checkpoint(data)))
        except (ValueError, ContractError) as exc:
            report.problems.append(f"{source}: not a checkpoint: {exc}")
    return found
