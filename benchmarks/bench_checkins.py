"""Check-ins per second against the hub, and against a bare FastAPI endpoint in the same run.

Simulated agents (already enrolled) check in over keep-alive mTLS connections, each with its
own certificate, with their current ETag, as agents do in steady state. The bare endpoint sits
behind the same TLS: the hub's certificate, a client certificate asked for and presented.
Goal: >= 2,000 check-ins/s with p99 < 100 ms on 2 cores (60,000 agents at a 30 s interval),
and >= 0.6 of the bare endpoint.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _agents import BenchAgent, enroll_agents, hub_tls
from _load import LoadResult, run_load

from aiorch.hub.pki.listener import SERVER_CERT, SERVER_KEY, TLS_DIR
from aiorch.hub.process import BIN, HubProcess, free_port
from aiorch.wait import wait_until

AGENTS = 1000
CONCURRENCY = 64  # connections, one agent each
DURATION = 10.0
BODY = {"agent_version": "bench", "uptime_s": 1.0, "facts_hash": "h", "applied_revision": 0}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hub = HubProcess(Path(tmp) / "hub").start()
        try:
            agents = enroll_agents(hub, AGENTS, Path(tmp) / "agents", "sim")
            contexts = [hub_tls(hub.ca_path, agent) for agent in agents[:CONCURRENCY]]

            def checkin(wid: int) -> tuple[str, dict[str, str], dict]:
                path = f"/api/v1/agents/{agents[wid].agent_id}/checkin"
                return path, {"If-None-Match": '"0"'}, BODY

            run_load(hub.url, checkin, CONCURRENCY, 2.0, contexts.__getitem__)  # warm-up
            hub_result = run_load(hub.url, checkin, CONCURRENCY, DURATION, contexts.__getitem__)
        finally:
            hub.stop()
        bare_result = bare_endpoint(hub.data_dir, agents[:CONCURRENCY])

    print(hub_result.line("hub check-ins "))
    print(bare_result.line("bare endpoint "))
    ratio = hub_result.rate / bare_result.rate
    print(f"ratio hub/bare: {ratio:.2f}  (goal >= 0.60; goal >= 2,000/s, p99 < 100 ms)")
    print(f"agents supported at a 30 s interval: {hub_result.rate * 30:,.0f}")


def bare_endpoint(data_dir: Path, agents: list[BenchAgent]) -> LoadResult:
    """The same load on _bare_app under uvicorn with the hub's certificate and CA."""
    tls = data_dir / TLS_DIR
    port = free_port()
    same_tls = ["--ssl-certfile", str(tls / SERVER_CERT), "--ssl-keyfile", str(tls / SERVER_KEY),
                "--ssl-ca-certs", str(data_dir / "ca.pem"),
                "--ssl-cert-reqs", str(int(ssl.CERT_OPTIONAL))]  # fmt: skip
    bare = subprocess.Popen(
        [str(BIN / "uvicorn"), "_bare_app:app", "--port", str(port), "--log-level", "warning",
         "--no-access-log", "--timeout-keep-alive", "30", *same_tls],
        cwd=Path(__file__).parent,
    )  # fmt: skip
    contexts = [hub_tls(data_dir / "ca.pem", agent) for agent in agents]
    try:
        url = f"https://127.0.0.1:{port}"
        wait_until(lambda: healthy_bare(url, contexts[0]), timeout=30, what="bare endpoint")
        run_load(url, lambda w: ("/checkin", {}, BODY), len(agents), 2.0, contexts.__getitem__)
        return run_load(
            url, lambda w: ("/checkin", {}, BODY), len(agents), DURATION, contexts.__getitem__
        )
    finally:
        bare.terminate()
        bare.wait()


def healthy_bare(url: str, tls: ssl.SSLContext) -> bool:
    try:
        return httpx.post(f"{url}/checkin", json={}, verify=tls).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
