"""Closed-loop HTTP(S) load over keep-alive connections, with latency percentiles.

Each worker keeps one connection, as an agent does: over mTLS, with its own certificate."""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: Counter[int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def line(self, label: str) -> str:
        return (
            f"{label}: {self.rate:,.0f} req/s  p50 {self.p50_ms:.1f} ms  p99 {self.p99_ms:.1f} ms  "
            f"statuses {dict(self.statuses)}"
        )


# Worker number -> (path, headers, JSON body) of its next request.
Request = Callable[[int], tuple[str, dict[str, str], Any]]
# Worker number -> the TLS context of its connection (its agent's certificate), or None.
Tls = Callable[[int], ssl.SSLContext | None]


async def _run(url: str, make: Request, concurrency: int, duration: float, tls: Tls) -> LoadResult:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + duration

    async def worker(wid: int) -> None:
        connector = aiohttp.TCPConnector(limit=1, force_close=False, ssl=tls(wid) or True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.perf_counter() < stop:
                path, headers, body = make(wid)
                t0 = time.perf_counter()
                async with session.post(url + path, json=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
                latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return LoadResult(len(latencies), elapsed, quantiles[49] * 1000, quantiles[98] * 1000, statuses)


def run_load(
    url: str,
    make: Request,
    concurrency: int = 64,
    duration: float = 10.0,
    tls: Tls = lambda wid: None,
) -> LoadResult:
    return asyncio.run(_run(url, make, concurrency, duration, tls))
