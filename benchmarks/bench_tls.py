"""Check-ins over mTLS with keep-alive, against a bare FastAPI endpoint behind the same TLS
settings in the same run; then the reconnect storm: after a hub restart, thousands of agents
doing full mutual handshakes at once, and how many failed (the goal is none).

Prints the figures and the ratio (hub / bare). Run: .venv/bin/python benchmarks/bench_tls.py
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiorch.hub.pki.authority import load_authority
from aiorch.hub.pki.listener import Listener, listen_names
from aiorch.hub.process import HubProcess, free_port
from aiorch.hub.store import Store
from benchmarks._bare_app import app as bare_app
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


async def keepalive_load(url_of: list[tuple[str, ssl.SSLContext]]) -> tuple[float, float, Counter]:
    """Closed loop: each worker keeps one connection (as an agent does) and checks in."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + DURATION_S

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


async def storm(url_of: list[tuple[str, ssl.SSLContext]]) -> tuple[float, Counter]:
    """Every connection new (a full mutual handshake) and all at once."""
    outcomes: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=120)

    async def one(url: str, tls: ssl.SSLContext) -> None:
        try:
            connector = aiohttp.TCPConnector(limit=1, ssl=tls, force_close=True)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            async with session, session.post(url, json=BODY) as response:
                await response.read()
                outcomes[str(response.status)] += 1
        except Exception as exc:  # counted: the figure is how many failed
            outcomes[type(exc).__name__] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(*url_of[n % len(url_of)]) for n in range(STORM)))
    return time.perf_counter() - started, outcomes


def bare_server(data_dir: Path, tls: ssl.SSLContext) -> tuple[str, uvicorn.Server]:
    port = free_port()
    config = uvicorn.Config(
        bare_app, host="127.0.0.1", port=port, log_level="error", ssl_context_factory=lambda *_: tls
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"https://127.0.0.1:{port}/checkin", server


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
            rate, p99, statuses = asyncio.run(keepalive_load(tls[:CONCURRENCY]))
            # The baseline: the same TLS settings (the hub's own listener and certificate).
            store = Store(data / "aiorch.db").open()
            authority = load_authority(data, store.read())
            store.close()
            assert authority is not None
            listener = Listener(data, listen_names(["127.0.0.1"], []))
            url, server = bare_server(data, listener.context(authority))
            bare = [(url, t) for _, t in tls[:CONCURRENCY]]
            bare_rate, bare_p99, bare_statuses = asyncio.run(keepalive_load(bare))
            server.should_exit = True
            hub_line = f"{rate:,.0f}/s p99 {p99:.1f} ms {dict(statuses)}"
            bare_line = f"{bare_rate:,.0f}/s p99 {bare_p99:.1f} ms {dict(bare_statuses)}"
            print(f"mTLS check-ins, keep-alive, {CONCURRENCY} agents: {hub_line}")
            print(f"bare FastAPI, same TLS settings: {bare_line}")
            print(f"ratio hub/bare: {rate / bare_rate:.2f}")
            hub.stop()
            hub.start()  # the restart: every agent reconnects with a full handshake
            seconds, outcomes = asyncio.run(storm(tls))
            errors = sum(n for what, n in outcomes.items() if what != "200")
            print(f"reconnect storm: {STORM} full mTLS handshakes at once in {seconds:.1f} s, "
                  f"{errors} errors {dict(outcomes)}")  # fmt: skip
        finally:
            hub.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
