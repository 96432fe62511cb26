"""HTTP health checks of running workloads, each on its own period (see `periodic`).

A probe is `GET http://127.0.0.1:<host port><path>`: 2xx and 3xx are healthy, anything else
(an HTTP error, a refused or timed-out connection) is a failure.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field

from edge_agent.contract.workload import HealthCheck
from edge_agent.workloads.periodic import Due, Periodic


@dataclass(frozen=True)
class Verdict:
    state: str  # "starting", "healthy" or "unhealthy"
    reason: str | None = None


@dataclass
class _Target(Due):
    check: HealthCheck = field(kw_only=True)
    host_port: int = field(kw_only=True)
    failures: int = 0  # in a row
    ever_healthy: bool = False
    verdict: Verdict = field(default_factory=lambda: Verdict("starting", "not probed yet"))


class HealthMonitor(Periodic[_Target, "str | None"]):
    """Probes every watched container on its own period. `watch` is called every round for
    each running container; containers not watched in a round are forgotten by `keep_only`."""

    def __init__(self) -> None:
        super().__init__("aiorch-health")

    def watch(self, key: str, check: HealthCheck, host_port: int) -> Verdict:
        """The verdict for `key` (a container and its start); a new key begins as starting,
        with its first probe after the check's initial delay."""
        due = time.monotonic() + check.initial_delay_s
        return self._watched(key, lambda: _Target(due, check=check, host_port=host_port)).verdict

    def _check(self, target: _Target) -> str | None:
        return probe(target.host_port, target.check)

    def _period(self, target: _Target) -> float:
        return target.check.period_s

    def _record(self, target: _Target, result: str | None) -> None:
        _record(target, result)


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
