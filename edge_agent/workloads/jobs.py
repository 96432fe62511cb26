"""Slow work for the reconciler (image loads, model downloads) on one background thread.

A multi-GB download must not hold up check-ins (the hub would call the agent offline), so a
round waits for a job only briefly and picks up its result in a later round. A failed job is
retried with exponential backoff; one that failed because the hub was away reads as pending,
since it will go through once the hub is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

from edge_agent.client import HubUnavailable

log = logging.getLogger("aiorch.agent.workloads")

RETRY_BASE_S = 10.0
RETRY_MAX_S = 300.0


@dataclass(frozen=True)
class Outcome:
    state: str  # "ready", "pending" or "failed"
    reason: str | None = None
    result: Any = None


@dataclass
class _Failure:
    reason: str
    transient: bool  # the hub was away: pending, not failed
    retry_at: float
    attempts: int

    def outcome(self) -> Outcome:
        return Outcome("pending" if self.transient else "failed", self.reason)


class Jobs:
    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: dict[str, Future[Any]] = {}
        self._failures: dict[str, _Failure] = {}

    def running(self, key: str) -> bool:
        return key in self._jobs

    def poll(self, key: str, work: Callable[[], Any], deadline: float, what: str) -> Outcome:
        """The result of `work` for `key` once done: starts it (or waits for it until
        `deadline`); pending while it runs, failed (or pending) with a reason after."""
        job = self._jobs.get(key)
        if job is None:
            failure = self._failures.get(key)
            if failure is not None and self.clock() < failure.retry_at:
                return failure.outcome()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
            job = self._jobs[key] = self._pool.submit(work)
        wait_futures([job], timeout=max(0.0, deadline - self.clock()))
        if not job.done():
            return Outcome("pending")
        del self._jobs[key]
        try:
            result = job.result()
        except Exception as exc:
            return self._failed(key, what, exc).outcome()
        self._failures.pop(key, None)
        return Outcome("ready", result=result)

    def keep_only(self, keep: set[str]) -> set[str]:
        """Forget the finished jobs and failures of keys not in `keep`; returns the keys of
        jobs still running (their files must stay)."""
        for key, job in list(self._jobs.items()):
            if key not in keep and job.done():
                del self._jobs[key]
        for key in list(self._failures):
            if key not in keep:
                del self._failures[key]
        return set(self._jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _failed(self, key: str, what: str, exc: Exception) -> _Failure:
        previous = self._failures.get(key)
        attempts = previous.attempts + 1 if previous else 1
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempts - 1))
        transient = isinstance(exc, HubUnavailable)
        prefix = f"waiting for the hub to serve {what}" if transient else what
        reason = f"{prefix}: {one_line(exc)}"
        log.warning("%s (retry in %.0fs)", reason, delay)
        failure = _Failure(reason, transient, self.clock() + delay, attempts)
        self._failures[key] = failure
        return failure


def one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
