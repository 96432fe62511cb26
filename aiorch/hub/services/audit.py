"""The audit log: who did what to what, written in the same transaction as the change.

Every row joins a hash chain (aiorch.audit_chain): it carries the previous row's hash and its
own, so editing, deleting or reordering a row breaks the chain at that row. The chain tip is
read and extended inside the caller's write transaction; the store has one writer thread, so
no two rows ever claim the same place, and a write that rolls back takes its row with it.

Rows hold ids and digests, never secrets: `record` refuses detail that looks like one.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import sqlite_utils

from aiorch.audit_chain import GENESIS, row_hash
from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext, decode_json_fields

_SECRET_NAME = re.compile(r"token|password|passwd|secret|key", re.IGNORECASE)
# Detail keys that name a secret's *id*, not the secret: each one checked at its caller.
# services/enrollment.py: the token row's id; bundle_trust.py and content.py: a bundle public
# key's fingerprint ("ed25519:<16 hex>"), never key material.
SAFE_NAMES = frozenset({"enrollment_token", "key_id"})
# Our bearer secrets, `<kind>_<id>_<secret>` (aiorch.hub.credentials).
_BEARER = re.compile(r"\b(?:aio|aie|aia)_[^_\s]+_\S+")


def record(
    db: sqlite_utils.Database,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    *,
    ts: float | None = None,
) -> None:
    """Append one entry to the chain; refuses (InvalidInput, so the whole write rolls back)
    an entry that looks like it holds a secret."""
    text = json.dumps(detail or {}, sort_keys=True, allow_nan=False)
    problem = _secret_in(json.loads(text), "detail") or _secret_in(
        {"actor": actor, "target": target}, "entry"
    )
    if problem is not None:
        raise InvalidInput(f"{action}: refusing to write {problem} to the audit log")
    tip = db.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS) if tip is None else (tip[0] + 1, bytes.fromhex(tip[1]))
    row = {
        "seq": seq,
        "ts": time.time() if ts is None else ts,
        "actor": actor,
        "action": action,
        "target": target,
        "detail": text,
    }
    digest = row_hash(prev, row)
    db.execute(
        "INSERT INTO audit_log (id, ts, actor, action, target, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, row["ts"], actor, action, target, text, prev.hex(), digest.hex()],
    )


def _secret_in(value: Any, where: str) -> str | None:
    """The first place in `value` that looks like a secret: a key named like one (outside
    SAFE_NAMES) or a string shaped like our bearer tokens."""
    for path, key, leaf in _walk(value, where, None):
        if key is not None and key not in SAFE_NAMES and _SECRET_NAME.search(key):
            return f"{path} (its name looks like a secret; store an id or digest)"
        if isinstance(leaf, str) and _BEARER.search(leaf):
            return f"{path} (its value looks like a bearer token)"
    return None


def _walk(value: Any, path: str, key: str | None) -> Iterator[tuple[str, str | None, Any]]:
    """(path, key it sits under, value) for `value` and everything nested in it."""
    yield path, key, value
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _walk(item, f"{path}.{name}", name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]", None)


def list_entries(
    ctx: HubContext,
    *,
    limit: int = 100,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    offset: int = 0,
) -> list[dict]:
    """The newest entries first. `action` matches that action or, as a dotted prefix, its
    family ("rollout" finds rollout.pause); `actor` and `target` match anywhere in the field;
    `offset` skips that many matches (the dashboard's pages)."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if action:
        where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
        params += [action, f"{_like(action)}.%"]
    for column, text in (("actor", actor), ("target", target)):
        if text:
            where.append(f"{column} LIKE ? ESCAPE '\\'")
            params.append(f"%{_like(text)}%")
    rows = ctx.store.read().query(
        f"SELECT * FROM audit_log WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [decode_json_fields(r, ["detail"]) for r in rows]


def _like(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (its % and _ are not wildcards)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
