"""Strict readers for the JSON documents between the hub and its agents.

JSON hands over dicts, lists, strings, numbers, booleans and nulls; each reader turns one field
into the type the contract promises, or raises `ContractError` naming the field, so a bad
document is refused with a reason where it enters instead of failing later somewhere else.
Standard library only: the agent keeps its small dependency set.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_INT = 2**63 - 1  # SQLite's integers are signed 64-bit; JSON has no bound of its own
MAX_DEPTH = 32


class ContractError(ValueError):
    """A document field that breaks the contract: `field` is its path, e.g. `gpus[0].name`."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field

    @property
    def section(self) -> str:
        """The top-level key the bad field sits under."""
        return re.split(r"[.\[]", self.field, maxsplit=1)[0]


def text(value: Any, where: str, max_length: int = 4096) -> str:
    if not isinstance(value, str) or not value:
        raise ContractError(where, "must be a non-empty string")
    if len(value) > max_length:
        raise ContractError(where, f"is longer than {max_length} characters")
    return value


def whole(value: Any, where: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(where, f"must be a whole number, got {value!r}")
    if not minimum <= value <= maximum:
        raise ContractError(where, f"is out of range: {value}")
    return value


def number(value: Any, where: str, minimum: float = 0.0, maximum: float = 1e15) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(where, f"must be a number, got {value!r}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ContractError(where, f"is out of range: {value}")
    return float(value)


def mapping(value: Any, where: str, optional: bool = False) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise ContractError(where, "must be a mapping")
    return value


def items(value: Any, where: str) -> list[Any]:
    """A list, where null means an empty one."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContractError(where, "must be a list")
    return value


def plain_json(value: Any, where: str, depth: int = 0) -> None:
    """Refuse what JSON text cannot hold or SQLite cannot store: NaN, infinities, integers
    beyond 64 bits, and nesting deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise ContractError(where, f"nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        whole(value, where, minimum=-MAX_INT)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ContractError(where, f"must be a finite number, got {value!r}")
    elif isinstance(value, dict):
        for key, inner in value.items():
            plain_json(inner, f"{where}.{key}" if where else str(key), depth + 1)
    elif isinstance(value, list):
        for position, inner in enumerate(value):
            plain_json(inner, f"{where}[{position}]", depth + 1)
    else:
        raise ContractError(where, f"is not JSON data ({type(value).__name__})")
