"""Checks of running containers, each on its own period, off the agent's rounds.

Rounds come every poll interval (tens of seconds), far slower than a check's period, so checks
run on threads of their own and a round only reads the latest result. Checks of different
containers run at once (up to `MAX_PARALLEL`), so one that hangs until its timeout delays no
other. The health checks and the load scrapes of autoscaled replicas both run this way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

MAX_PARALLEL = 16


@dataclass
class Due:
    """What the scheduler keeps of every target; subclasses add what their check needs."""

    next_due: float
    probing: bool = False  # a check is in flight


T = TypeVar("T", bound=Due)
R = TypeVar("R")


class Periodic(Generic[T, R]):
    """Runs `_check(target)` for every target when due, then `_record(target, result)` and
    schedules the next after `_period(target)`. `keep_only` forgets targets no longer wanted."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._targets: dict[str, T] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def _check(self, target: T) -> R:
        raise NotImplementedError

    def _record(self, target: T, result: R) -> None:
        raise NotImplementedError

    def _period(self, target: T) -> float:
        raise NotImplementedError

    def _watched(self, key: str, new: Callable[[], T]) -> T:
        """The target under `key`, made by `new` (first due at its `next_due`) if it is new.
        Results are replaced whole, so a caller may read them without the lock."""
        with self._lock:
            target = self._targets.get(key)
            if target is None:
                target = self._targets[key] = new()
                self._wake.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        return target

    def keep_only(self, keys: set[str]) -> None:
        with self._lock:
            for key in set(self._targets) - keys:
                del self._targets[key]

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        """Start the checks that are due, each on a worker; sleep until the next is due."""
        pool = ThreadPoolExecutor(MAX_PARALLEL, thread_name_prefix=f"{self._name}-check")
        try:
            while not self._closed:
                now = time.monotonic()
                with self._lock:
                    due = [
                        (key, target)
                        for key, target in self._targets.items()
                        if target.next_due <= now and not target.probing
                    ]
                    for _, target in due:
                        target.probing = True
                    waiting = [t.next_due for t in self._targets.values() if not t.probing]
                for key, target in due:
                    pool.submit(self._run_check, key, target)
                wake_at = min(waiting, default=now + 3600)
                self._wake.wait(timeout=max(0.0, wake_at - time.monotonic()))
                self._wake.clear()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _run_check(self, key: str, target: T) -> None:
        result = self._check(target)
        with self._lock:
            target.probing = False
            target.next_due = time.monotonic() + self._period(target)
            if self._targets.get(key) is target:
                self._record(target, result)
        self._wake.set()
