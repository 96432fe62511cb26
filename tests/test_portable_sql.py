"""The store's SQL stays what PostgreSQL also accepts, so a hub can move there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# SQLite-only conflict clauses; `ON CONFLICT ... DO NOTHING/UPDATE` is the portable form.
SQLITE_ONLY = re.compile(r"\b(INSERT\s+OR\s+(IGNORE|REPLACE)|REPLACE\s+INTO)\b", re.IGNORECASE)


def test_no_sqlite_only_conflict_clauses() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("aiorch", "edge_agent")
        for path in (ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SQLITE_ONLY.search(line)
    ]
    assert found == []
