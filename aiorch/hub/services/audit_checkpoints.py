"""Signed checkpoints of the audit chain: every `audit_checkpoint_rows` rows or
`audit_checkpoint_interval_s` seconds (whichever comes first, and only when rows were added),
the hub signs "the log has N rows ending in hash H" with its audit key.

Each checkpoint is stored in the database (`audit_checkpoints`) and appended to
`DATA_DIR/audit-checkpoints.jsonl`, outside it: a database file restored from an older copy no
longer matches the file, and `aiorch audit verify` says so. The newest one goes to agents in
their check-in answers (`latest_checkpoint`); they keep it as witnesses. The hub never signs a
checkpoint that contradicts the newest one in the file (C2SP tlog-checkpoint: a log must not
sign one inconsistent with any it signed before); it logs why and waits for an operator.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.audit_chain import CHECKPOINTS_FILE, b64
from aiorch.hub.context import HubContext
from aiorch.hub.services.audit_key import AuditKey
from edge_agent.contract.audit import Checkpoint, parse_checkpoint
from edge_agent.contract.fields import ContractError

log = logging.getLogger("aiorch.hub.audit")

_COLUMNS = "origin, size, root, timestamp, signature"


def prepare(ctx: HubContext) -> None:
    """At hub start: load (or make) the audit key, refusing a loose key file mode, and say
    loudly when the database no longer matches the checkpoints file."""
    _load(ctx)
    problem = _contradicts_anchor(ctx.store.read(), ctx)
    if problem:
        log.error("audit log: %s", problem)


def latest_checkpoint(ctx: HubContext) -> dict[str, Any] | None:
    """The newest signed checkpoint (contract: edge_agent.contract.audit), from memory."""
    latest = _load(ctx).latest
    return None if latest is None else latest.to_json()


def checkpoint(ctx: HubContext) -> str | None:
    """The job: sign a checkpoint when one is due; says what it did or why it refused."""
    key = _load(ctx)
    settings, now = ctx.settings, int(ctx.clock())

    def op(db: sqlite_utils.Database) -> Checkpoint | str | None:
        tip = db.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        last = _newest(db)
        if tip is None or (last is not None and last.size >= tip[0]):
            return None
        if last is not None and (
            tip[0] - last.size < settings.audit_checkpoint_rows
            and now - last.timestamp < settings.audit_checkpoint_interval_s
        ):
            return None
        problem = _contradicts_anchor(db, ctx)
        if problem:
            return f"not signing: {problem}"
        signed = key.sign(tip[0], bytes.fromhex(tip[1]), now)
        db.execute(
            f"INSERT INTO audit_checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            [signed.origin, signed.size, signed.root, signed.timestamp, signed.signature],
        )
        return signed

    result = ctx.store.write(op)
    if not isinstance(result, Checkpoint):
        if result:
            log.error("audit log: %s", result)
        return result
    _append(ctx.settings.data_dir / CHECKPOINTS_FILE, result)
    key.latest = key.anchor = result
    return f"signed {result.describe()}"


def _load(ctx: HubContext) -> AuditKey:
    """The context's audit key, with its newest checkpoints read once (DB and file)."""
    key = ctx.audit_key
    if not key.loaded:
        key.latest = _newest(ctx.store.read())
        key.anchor = _newest_in_file(ctx.settings.data_dir / CHECKPOINTS_FILE)
        key.loaded = True
    return key


def _newest(db: sqlite_utils.Database) -> Checkpoint | None:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
    ).fetchone()
    return None if row is None else Checkpoint(*row)


def _newest_in_file(path: Path) -> Checkpoint | None:
    """The last well-formed checkpoint in the file (a torn last line is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return parse_checkpoint(json.loads(line))
        except (ValueError, ContractError):
            continue
    return None


def _contradicts_anchor(db: sqlite_utils.Database, ctx: HubContext) -> str | None:
    """Why the chain no longer holds the newest checkpoint of the file, or None."""
    anchor = _load(ctx).anchor
    if anchor is None:
        return None
    row = db.execute("SELECT hash FROM audit_log WHERE id = ?", [anchor.size]).fetchone()
    if row is not None and b64(bytes.fromhex(row[0])) == anchor.root:
        return None
    return (
        f"the database no longer matches {anchor.describe()} in {CHECKPOINTS_FILE}: "
        "it was restored from an older copy or rewritten (run `aiorch audit verify`)"
    )


def _append(path: Path, checkpoint: Checkpoint) -> None:
    """One JSON line, fsynced: the record outside the database must outlive a crash."""
    line = json.dumps(checkpoint.to_json(), sort_keys=True) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "r+b") as out:
        if out.seek(0, os.SEEK_END) and os.pread(fd, 1, out.tell() - 1) != b"\n":
            line = "\n" + line  # a line torn by a crash stays apart from this one
        out.write(line.encode())
        out.flush()
        os.fsync(out.fileno())
