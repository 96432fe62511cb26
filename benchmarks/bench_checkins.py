"""Check-ins per second against the hub, and against a bare FastAPI endpoint in the same run.

Simulated agents (already enrolled) check in over keep-alive connections with their current
ETag, as agents do in steady state. Goal: >= 2,000 check-ins/s with p99 < 100 ms on 2 cores
(60,000 agents at a 30 s interval), and >= 0.6 of the bare endpoint.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _load import run_load

from aiorch.hub.process import BIN, HubProcess, free_port
from aiorch.wait import wait_until

AGENTS = 1000
DURATION = 10.0


def enroll_agents(hub: HubProcess, count: int) -> list[tuple[str, str]]:
    auth = {"Authorization": f"Bearer {hub.admin_token}"}
    admin = httpx.Client(base_url=f"{hub.url}/api/v1", headers=auth)
    token = admin.post("/enroll-tokens", json={"site": "bench", "uses": count}).json()["token"]
    agents = []
    with httpx.Client(base_url=f"{hub.url}/api/v1") as client:
        for i in range(count):
            r = client.post("/enroll", json={"token": token, "facts": {"hostname": f"sim-{i}"}})
            agents.append((r.json()["agent_id"], r.json()["credential"]))
    return agents


def main() -> None:
    body = {"agent_version": "bench", "uptime_s": 1.0, "facts_hash": "h", "applied_revision": 0}
    with tempfile.TemporaryDirectory() as tmp:
        hub = HubProcess(Path(tmp) / "hub").start()
        try:
            agents = enroll_agents(hub, AGENTS)

            def checkin(i: int) -> tuple[str, dict[str, str], dict]:
                agent_id, credential = agents[i % len(agents)]
                headers = {"Authorization": f"Bearer {credential}", "If-None-Match": '"0"'}
                return f"/api/v1/agents/{agent_id}/checkin", headers, body

            run_load(hub.url, checkin, duration=2.0)  # warm-up
            hub_result = run_load(hub.url, checkin, duration=DURATION)
        finally:
            hub.stop()

    port = free_port()
    bare = subprocess.Popen(
        [str(BIN / "uvicorn"), "_bare_app:app", "--port", str(port), "--log-level", "warning",
         "--no-access-log", "--timeout-keep-alive", "30"],
        cwd=Path(__file__).parent,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy_bare(url), timeout=30, what="bare endpoint")
        run_load(url, lambda i: ("/checkin", {}, body), duration=2.0)
        bare_result = run_load(url, lambda i: ("/checkin", {}, body), duration=DURATION)
    finally:
        bare.terminate()
        bare.wait()

    print(hub_result.line("hub check-ins "))
    print(bare_result.line("bare endpoint "))
    ratio = hub_result.rate / bare_result.rate
    print(f"ratio hub/bare: {ratio:.2f}  (goal >= 0.60; goal >= 2,000/s, p99 < 100 ms)")
    print(f"agents supported at a 30 s interval: {hub_result.rate * 30:,.0f}")


def healthy_bare(url: str) -> bool:
    try:
        return httpx.post(f"{url}/checkin", json={}).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
