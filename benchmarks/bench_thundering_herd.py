"""Thundering herd: 5,000 agents reconnect at once right after a hub restart.

Every agent checks in once over a new mTLS connection (a full handshake with its own
certificate), honouring Retry-After on 429/503 as the real agent does.
Reported: time until all have checked in, the answers seen, and whether any 5xx or
"database is locked" appeared (goal: none). Baseline in the same run: one agent's check-in
latency on the idle hub, so the figure can be read as a multiple of it.
"""

from __future__ import annotations

import asyncio
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))

from _agents import BenchAgent, enroll_offline, hub_tls

from aiorch.hub.process import HubProcess

AGENTS = 5000


BODY = {"agent_version": "bench", "uptime_s": 1.0, "facts_hash": "h", "applied_revision": 0}


async def herd(url: str, ca: Path, agents: list[BenchAgent]) -> tuple[float, Counter[int], int]:
    statuses: Counter[int] = Counter()
    errors = 0
    timeout = aiohttp.ClientTimeout(total=120)

    async def one(agent: BenchAgent) -> None:
        nonlocal errors
        connector = aiohttp.TCPConnector(limit=1, ssl=hub_tls(ca, agent))
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for _ in range(20):
                try:
                    async with session.post(
                        f"{url}/api/v1/agents/{agent.agent_id}/checkin",
                        json=BODY,
                        headers={"If-None-Match": '"0"'},
                    ) as response:
                        statuses[response.status] += 1
                        if response.status in (200, 304):
                            return
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    await asyncio.sleep(1.0)

    started = time.perf_counter()
    await asyncio.gather(*(one(agent) for agent in agents))
    return time.perf_counter() - started, statuses, errors


async def single(url: str, ca: Path, agent: BenchAgent) -> float:
    """One agent's check-in on its kept-alive mTLS connection (median of 50)."""
    connector = aiohttp.TCPConnector(limit=1, ssl=hub_tls(ca, agent))
    async with aiohttp.ClientSession(connector=connector) as session:
        samples = []
        for _ in range(50):
            t0 = time.perf_counter()
            async with session.post(
                f"{url}/api/v1/agents/{agent.agent_id}/checkin", json=BODY
            ) as response:
                await response.read()
            samples.append(time.perf_counter() - t0)
        return sorted(samples)[len(samples) // 2]


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "hub"
        agents = enroll_offline(data_dir, AGENTS, Path(tmp) / "agents", "herd")
        hub = HubProcess(data_dir).start()
        try:
            baseline = asyncio.run(single(hub.url, hub.ca_path, agents[0]))
            hub.stop()
            hub.start()  # the restart the herd reacts to
            elapsed, statuses, errors = asyncio.run(herd(hub.url, hub.ca_path, agents))
        finally:
            hub.stop()
        log = hub.log.read_text()
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    locked = len(re.findall("database is locked", log))
    print(f"single check-in on an idle hub: {baseline * 1000:.1f} ms (baseline)")
    print(
        f"{AGENTS} agents reconnecting at once after a restart: all checked in after "
        f"{elapsed:.2f} s ({AGENTS / elapsed:,.0f}/s, {elapsed / baseline:,.0f}x the baseline)"
    )
    print(f"answers: {dict(statuses)}; connection errors retried: {errors}")
    print(
        f"5xx answers: {server_errors}; 'database is locked' in the hub log: {locked} (goal: 0, 0)"
    )
    if server_errors or locked:
        sys.exit(1)


if __name__ == "__main__":
    main()
