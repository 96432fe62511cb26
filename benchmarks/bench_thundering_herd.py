"""Thundering herd: 5,000 agents reconnect at once right after a hub restart.

Every agent checks in once, honouring Retry-After on 429/503 as the real agent does.
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

from aiorch.hub.context import HubContext
from aiorch.hub.process import HubProcess
from aiorch.hub.services import enrollment
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store

AGENTS = 5000


def enroll_offline(data_dir: Path, count: int) -> list[tuple[str, str]]:
    """Enroll through the service layer before the hub runs: fast, and the same rows."""
    settings = HubSettings(data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ctx = HubContext(store=Store(settings.db_path).open(), settings=settings)
    token = enrollment.create_token(ctx, "herd", 3600, count, "bench")["token"]
    agents = []
    for i in range(count):
        result = enrollment.enroll(ctx, token, {"hostname": f"herd-{i}"}, "bench")
        agents.append((result["agent_id"], result["credential"]))
    ctx.store.close()
    return agents


BODY = {"agent_version": "bench", "uptime_s": 1.0, "facts_hash": "h", "applied_revision": 0}


async def herd(url: str, agents: list[tuple[str, str]]) -> tuple[float, Counter[int], int]:
    statuses: Counter[int] = Counter()
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(agent_id: str, credential: str) -> None:
            nonlocal errors
            headers = {"Authorization": f"Bearer {credential}", "If-None-Match": '"0"'}
            for _ in range(20):
                try:
                    async with session.post(
                        f"{url}/api/v1/agents/{agent_id}/checkin", json=BODY, headers=headers
                    ) as response:
                        statuses[response.status] += 1
                        if response.status in (200, 304):
                            return
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    await asyncio.sleep(1.0)

        started = time.perf_counter()
        await asyncio.gather(*(one(a, c) for a, c in agents))
        return time.perf_counter() - started, statuses, errors


async def single(url: str, agent: tuple[str, str]) -> float:
    async with aiohttp.ClientSession() as session:
        samples = []
        for _ in range(50):
            t0 = time.perf_counter()
            async with session.post(
                f"{url}/api/v1/agents/{agent[0]}/checkin",
                json={
                    "agent_version": "b",
                    "uptime_s": 1,
                    "facts_hash": "h",
                    "applied_revision": 0,
                },
                headers={"Authorization": f"Bearer {agent[1]}"},
            ) as response:
                await response.read()
            samples.append(time.perf_counter() - t0)
        return sorted(samples)[len(samples) // 2]


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "hub"
        agents = enroll_offline(data_dir, AGENTS)
        hub = HubProcess(data_dir).start()
        try:
            baseline = asyncio.run(single(hub.url, agents[0]))
            hub.stop()
            hub.start()  # the restart the herd reacts to
            elapsed, statuses, errors = asyncio.run(herd(hub.url, agents))
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
