"""How the CLI shows results: a rich table for people, JSON for scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


class Output(StrEnum):
    table = "table"
    json = "json"


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and column.endswith(("_at", "last_seen")):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def emit(data: Any, output: Output, columns: Sequence[str] = (), title: str | None = None) -> None:
    """Lists become tables with `columns`; single objects become key/value tables."""
    if output is Output.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    if isinstance(data, dict):
        table = Table("field", "value", title=title, show_header=False)
        for key, value in data.items():
            table.add_row(key, _cell(value, key))
    else:
        table = Table(*columns, title=title)
        for row in data:
            table.add_row(*(_cell(row.get(c), c) for c in columns))
    console.print(table)
