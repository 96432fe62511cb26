"""Waiting on a condition with a deadline: how the hub's process control, the lab and the tests
synchronise (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Raises ``TimeoutError`` naming ``what`` once ``timeout`` seconds have passed,
    so a hung host shows up as a readable failure instead of a stuck test. The
    short pause between polls only spaces out the checks; it never stands in
    for the condition itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
