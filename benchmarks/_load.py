"""Closed-loop HTTP load over keep-alive connections, with latency percentiles."""

from __future__ import annotations

import asyncio
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


Request = Callable[[int], tuple[str, dict[str, str], Any]]


async def _run(url: str, make: Request, concurrency: int, duration: float) -> LoadResult:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(wid: int) -> None:
            i = wid
            while time.perf_counter() < stop:
                path, headers, body = make(i)
                t0 = time.perf_counter()
                async with session.post(url + path, json=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
                latencies.append(time.perf_counter() - t0)
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return LoadResult(len(latencies), elapsed, quantiles[49] * 1000, quantiles[98] * 1000, statuses)


def run_load(url: str, make: Request, concurrency: int = 64, duration: float = 10.0) -> LoadResult:
    return asyncio.run(_run(url, make, concurrency, duration))
