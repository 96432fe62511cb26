"""The load of autoscaled replicas, scraped from their own Prometheus endpoint.

Each replica's metric is read every `PERIOD_S` on the periodic checker's threads (never in a
round): `GET http://127.0.0.1:<host port><path>`, Prometheus text format, the samples of the
metric's name summed across label sets. A failed scrape or a page that does not parse leaves
no value, so the hub never scales on a number it cannot trust.
"""

from __future__ import annotations

import http.client
import logging
import math
import re
import time
from dataclasses import dataclass, field

from edge_agent.contract.workload import Metric
from edge_agent.workloads.periodic import Due, Periodic

log = logging.getLogger("aiorch.agent.workloads")

PERIOD_S = 2.0
TIMEOUT_S = 2.0
MAX_PAGE = 4 << 20  # bytes; a metrics page larger than this is refused

# name, optional {label="value",...} (values may hold anything escaped), value, timestamp
_LABEL = r'[ \t]*[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"(?:[^"\\\n]|\\.)*"[ \t]*'
_SAMPLE = re.compile(
    rf"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{(?:{_LABEL}(?:,{_LABEL})*,?)?[ \t]*\}})?"
    r"[ \t]+(\S+)(?:[ \t]+-?\d+)?"
)


class MetricsError(ValueError):
    """A metrics page that is not Prometheus text."""


def summed(page: str, name: str) -> float | None:
    """The sum of metric `name`'s samples on `page`, None when it has none; MetricsError
    names the first line that is not a comment, a blank or a sample."""
    total, found = 0.0, False
    for number, line in enumerate(page.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise MetricsError(f"line {number} is not a sample: {line[:80]!r}")
        if match[1] != name:
            continue
        try:
            value = float(match[2])
        except ValueError:
            raise MetricsError(f"line {number}: {match[2][:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise MetricsError(f"line {number}: {name} is {match[2]}")
        total, found = total + value, True
    return total if found else None


def scrape(host_port: int, metric: Metric) -> float | None:
    """One scrape: the metric's summed value, or None (logged at debug: a replica still
    starting fails every scrape until it listens)."""
    conn = http.client.HTTPConnection("127.0.0.1", host_port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", metric.path, headers={"User-Agent": "aiorch-agent-load"})
        response = conn.getresponse()
        body = response.read(MAX_PAGE + 1)
        if response.status != 200 or len(body) > MAX_PAGE:
            raise MetricsError(f"HTTP {response.status}, {len(body)} bytes")
        return summed(body.decode("utf-8", "replace"), metric.name)
    except (OSError, http.client.HTTPException, MetricsError) as exc:
        log.debug("load of port %d%s: %s", host_port, metric.path, exc)
        return None
    finally:
        conn.close()


@dataclass
class _Scrape(Due):
    metric: Metric = field(kw_only=True)
    host_port: int = field(kw_only=True)
    value: float | None = None


class LoadMonitor(Periodic[_Scrape, "float | None"]):
    """Scrapes every watched replica's metric; `watch` answers the latest value."""

    def __init__(self) -> None:
        super().__init__("aiorch-load")

    def watch(self, key: str, metric: Metric, host_port: int) -> float | None:
        scraping = _Scrape(time.monotonic(), metric=metric, host_port=host_port)
        return self._watched(key, lambda: scraping).value

    def _check(self, target: _Scrape) -> float | None:
        return scrape(target.host_port, target.metric)

    def _period(self, target: _Scrape) -> float:
        return PERIOD_S

    def _record(self, target: _Scrape, result: float | None) -> None:
        target.value = result
