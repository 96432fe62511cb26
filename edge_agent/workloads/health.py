"""HTTP health checks of running workloads, each on its own period.

Rounds come every poll interval (tens of seconds), far slower than a health check's period,
so probes run on threads of their own and a round only reads the latest verdict. Probes of
different containers run at once (up to `MAX_PARALLEL`), so one that hangs until its timeout
delays no other. A probe is
`GET http://127.0.0.1:<host port><path>`: 2xx and 3xx are healthy, anything else (an HTTP
error, a refused or timed-out connection) is a failure.
"""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from edge_agent.contract.workload import HealthCheck

MAX_PARALLEL = 16


@dataclass(frozen=True)
class Verdict:
    state: str  # "starting", "healthy" or "unhealthy"
    reason: str | None = None


@dataclass
class _Target:
    check: HealthCheck
    host_port: int
    next_due: float
    failures: int = 0  # in a row
    ever_healthy: bool = False
    probing: bool = False  # a probe is in flight
    verdict: Verdict = field(default_factory=lambda: Verdict("starting", "not probed yet"))


class HealthMonitor:
    """Probes every watched container on its own period. `watch` is called every round for
    each running container; containers not watched in a round are forgotten by `keep_only`."""

    def __init__(self) -> None:
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, key: str, check: HealthCheck, host_port: int) -> Verdict:
        """The verdict for `key` (a container and its start); a new key begins as starting,
        with its first probe after the check's initial delay."""
        with self._lock:
            target = self._targets.get(key)
            if target is None:
                due = time.monotonic() + check.initial_delay_s
                target = self._targets[key] = _Target(check, host_port, due)
                self._wake.set()
            verdict = target.verdict
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="aiorch-health", daemon=True)
            self._thread.start()
        return verdict

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
        """Start the probes that are due, each on a worker; sleep until the next is due."""
        pool = ThreadPoolExecutor(MAX_PARALLEL, thread_name_prefix="aiorch-probe")
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
                    pool.submit(self._probe, key, target)
                wake_at = min(waiting, default=now + 3600)
                self._wake.wait(timeout=max(0.0, wake_at - time.monotonic()))
                self._wake.clear()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _probe(self, key: str, target: _Target) -> None:
        error = probe(target.host_port, target.check)
        with self._lock:
            target.probing = False
            target.next_due = time.monotonic() + target.check.period_s
            if self._targets.get(key) is target:
                _record(target, error)
        self._wake.set()


def probe(host_port: int, check: HealthCheck) -> str | None:
    """One probe: None when healthy, else what went wrong, in a few words."""
    conn = http.client.HTTPConnection("127.0.0.1", host_port, timeout=check.timeout_s)
    try:
        conn.request("GET", check.path, headers={"User-Agent": "aiorch-agent-health"})
        status = conn.getresponse().status
    except TimeoutError:
        return f"no answer within {check.timeout_s:g}s"
    except (OSError, http.client.HTTPException) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    finally:
        conn.close()
    return None if 200 <= status < 400 else f"HTTP {status}"


def _record(target: _Target, error: str | None) -> None:
    """Healthy after one success; unhealthy after `failure_threshold` failures in a row;
    until then a new container is starting and a healthy one stays healthy."""
    check = target.check
    if error is None:
        target.failures, target.ever_healthy = 0, True
        target.verdict = Verdict("healthy")
        return
    target.failures += 1
    where = f"GET {check.path} on port {target.host_port}"
    if target.failures >= check.failure_threshold:
        target.verdict = Verdict(
            "unhealthy", f"{where} failed {target.failures} times in a row: {error}"
        )
    elif not target.ever_healthy:
        target.verdict = Verdict(
            "starting", f"{where} failed {target.failures}/{check.failure_threshold}: {error}"
        )
