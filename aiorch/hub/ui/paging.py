"""One page of a list: `?page=N` (from 1), PER_PAGE rows, with links to the pages either side.

A route asks its service for one row more than a page holds (`limit`, `offset`): that row,
never shown, says whether there is a next page without counting the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Query

PER_PAGE = 50
MAX_PAGE = 100_000  # past any real list; keeps OFFSET inside SQLite's integers

T = TypeVar("T")

PageNumber = Query(1, ge=1, le=MAX_PAGE, alias="page", description="Which page, from 1.")


@dataclass(frozen=True)
class Pager:
    number: int
    rows: list[Any]
    more: bool
    query: dict[str, str]  # the list's other parameters, kept by the links

    def link(self, number: int) -> str:
        return "?" + urlencode({**self.query, "page": number})

    @property
    def previous(self) -> str | None:
        return self.link(self.number - 1) if self.number > 1 else None

    @property
    def next(self) -> str | None:
        return self.link(self.number + 1) if self.more else None


def window(number: int) -> tuple[int, int]:
    """(limit, offset) for page `number`: one row more than a page, to know if one follows."""
    return PER_PAGE + 1, (number - 1) * PER_PAGE


def pager(number: int, rows: list[T], **query: str | None) -> Pager:
    kept = {key: value for key, value in query.items() if value}
    return Pager(number, rows[:PER_PAGE], len(rows) > PER_PAGE, kept)
