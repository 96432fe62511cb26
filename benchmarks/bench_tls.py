"""Check-ins over mTLS with keep-alive, against a bare FastAPI endpoint behind the same TLS
settings in the same run; then the reconnect storm: after a hub restart, thousands of agents
doing full mutual handshakes at once, and how many failed (the goal is none).

Prints the figures and the ratio (hub / bare). Both servers run in their own process, and the
clients in this one, all on one machine: in the storm the clients' own handshakes compete with
the hub's for the CPU, which real agents (each on its own box) do not.
Run: .venv/bin/python benchmarks/bench_tls.py
"""

from __future__ import annotations

import asyncio
import random
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiorch.hub.process import HubProcess, free_port
from aiorch.wait import wait_until
from edge_agent import identity

AGENTS = 64
CONCURRENCY = 32
DURATION_S = 8.0
STORM = 5000
BODY = {"agent_version": "bench", "uptime_s": 1.0, "facts_hash": "x", "applied_revision": 0}


def enroll(hub: HubProcess, count: int, where: Path) -> list[tuple[str, Path]]:
    verify = ssl.create_default_context(cafile=str(hub.ca_path))
    headers = {"Authorization": f"Bearer {hub.admin_token}"}
    agents = []
    with httpx.Client(base_url=f"{hub.url}/api/v1", verify=verify, headers=headers) as client:
        token = client.post("/enroll-tokens", json={"site": "bench", "uses": count}).json()["token"]
        for n in range(count):
            key = identity.new_key()
            body = {"token": token, "csr": identity.csr_pem(key), "facts": {"hostname": f"b{n}"}}
            answer = client.post("/enroll", json=body).json()
            path = where / f"agent-{n}.pem"
            identity.save(path, key, answer["certificate"])
            agents.append((answer["agent_id"], path))
    return agents


def agent_tls(ca: Path, cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(cert)
    return context


async def keepalive_load(
    url_of: list[tuple[str, ssl.SSLContext]], duration: float = DURATION_S
) -> tuple[float, float, Counter]:
    """Closed loop: each worker keeps one connection (as an agent does) and checks in."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + duration

    async def worker(url: str, tls: ssl.SSLContext) -> None:
        connector = aiohttp.TCPConnector(limit=1, ssl=tls)
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    statuses[response.status] += 1
                latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker(u, t) for u, t in url_of))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return len(latencies) / elapsed, p99, statuses


async def storm(url_of: list[tuple[str, ssl.SSLContext]]) -> tuple[float, Counter, Counter]:
    """Every connection new (a full mutual handshake) and all at once; a failed agent retries
    as the agent does (full-jitter backoff from 1 s, capped at 30 s). Returns the seconds until
    every agent got through, what the first attempts met, and what the last ones did."""
    first: Counter[str] = Counter()
    last: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=120)
    deadline = time.perf_counter() + 300

    async def attempt(url: str, tls: ssl.SSLContext) -> str:
        try:
            connector = aiohttp.TCPConnector(limit=1, ssl=tls, force_close=True)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            async with session, session.post(url, json=BODY) as response:
                await response.read()
                return str(response.status)
        except Exception as exc:  # counted: the figure is how many failed
            return type(exc).__name__

    async def agent(url: str, tls: ssl.SSLContext) -> None:
        outcome, tries = await attempt(url, tls), 1
        first[outcome] += 1
        while outcome != "200" and time.perf_counter() < deadline:
            await asyncio.sleep(random.uniform(0, min(30.0, 2.0**tries)))
            outcome, tries = await attempt(url, tls), tries + 1
        last[outcome] += 1

    started = time.perf_counter()
    await asyncio.gather(*(agent(*url_of[n % len(url_of)]) for n in range(STORM)))
    return time.perf_counter() - started, first, last


def bare_server(data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """The baseline in its own process, as the hub is (see _bare_tls.py)."""
    port = free_port()
    script = Path(__file__).with_name("_bare_tls.py")
    proc = subprocess.Popen([sys.executable, str(script), str(data_dir), str(port)])
    verify = ssl.create_default_context(cafile=str(data_dir / "ca.pem"))

    def up() -> bool:
        try:
            return httpx.post(
                f"https://127.0.0.1:{port}/checkin", json={}, verify=verify
            ).is_success
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30, what="the baseline server")
    return f"https://127.0.0.1:{port}/checkin", proc


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "hub"
        hub = HubProcess(data, serve_args=["--max-connections", "20000"]).start()
        try:
            agents = enroll(hub, AGENTS, Path(tmp))
            tls = [
                (f"{hub.url}/api/v1/agents/{a}/checkin", agent_tls(hub.ca_path, p))
                for a, p in agents
            ]
            asyncio.run(keepalive_load(tls[:CONCURRENCY], 2.0))  # warm-up
            rate, p99, statuses = asyncio.run(keepalive_load(tls[:CONCURRENCY]))
            # The baseline: the same TLS settings (the hub's own listener and certificate).
            url, server = bare_server(data)
            bare = [(url, t) for _, t in tls[:CONCURRENCY]]
            asyncio.run(keepalive_load(bare, 2.0))  # warm-up
            bare_rate, bare_p99, bare_statuses = asyncio.run(keepalive_load(bare))
            server.terminate()
            server.wait(30)
            hub_line = f"{rate:,.0f}/s p99 {p99:.1f} ms {dict(statuses)}"
            bare_line = f"{bare_rate:,.0f}/s p99 {bare_p99:.1f} ms {dict(bare_statuses)}"
            print(f"mTLS check-ins, keep-alive, {CONCURRENCY} agents: {hub_line}")
            print(f"bare FastAPI, same TLS settings: {bare_line}")
            print(f"ratio hub/bare: {rate / bare_rate:.2f}")
            hub.stop()
            hub.start()  # the restart: every agent reconnects with a full handshake
            seconds, first, last = asyncio.run(storm(tls))
            errors = sum(n for what, n in last.items() if what != "200")
            print(f"reconnect storm: {STORM} agents, full mTLS handshakes at once: all through in "
                  f"{seconds:.1f} s, {errors} errors; first attempts {dict(first)}")  # fmt: skip
        finally:
            hub.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
