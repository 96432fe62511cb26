"""Telemetry ingest: samples/s stored through the API, against raw sqlite executemany into the
same table in the same run. Goal: >= 200,000 samples/s and >= 0.5 of raw."""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from aiorch.hub.process import HubProcess
from aiorch.hub.store import Store

BATCH = 5000
BATCHES = 60
SERIES = 50


def batch_body(epoch: str, start: int) -> bytes:
    series = [
        {"metric": "gpu_utilization_percent", "labels": {"gpu": str(i)}} for i in range(SERIES)
    ]
    t0 = 1_800_000_000.0 + start
    samples = [[start + i, t0 + i / SERIES, i % SERIES, float(i % 100)] for i in range(BATCH)]
    body = {"epoch": epoch, "seq_start": start, "seq_end": start + BATCH - 1, "series": series}
    return json.dumps({**body, "samples": samples}).encode()


def through_api(tmp: Path) -> float:
    hub = HubProcess(tmp / "hub").start()
    try:
        auth = {"Authorization": f"Bearer {hub.admin_token}"}
        with httpx.Client(base_url=f"{hub.url}/api/v1", headers=auth, timeout=60) as admin:
            token = admin.post("/enroll-tokens", json={"site": "bench"}).json()["token"]
            enrolled = admin.post(
                "/enroll", json={"token": token, "facts": {"hostname": "b"}}
            ).json()
        headers = {
            "Authorization": f"Bearer {enrolled['credential']}",
            "Content-Type": "application/json",
        }
        url = f"{hub.url}/api/v1/agents/{enrolled['agent_id']}/telemetry"
        bodies = [batch_body("e1", i * BATCH) for i in range(BATCHES)]
        with httpx.Client(headers=headers, timeout=60) as client:
            client.post(url, content=batch_body("warm", 0))

            def send(body: bytes) -> int:
                return int(client.post(url, content=body).json()["stored"])

            started = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                stored = sum(pool.map(send, bodies))
            elapsed = time.perf_counter() - started
        assert stored == BATCH * BATCHES, stored
        return stored / elapsed
    finally:
        hub.stop()


def raw_executemany(tmp: Path) -> float:
    store = Store(tmp / "raw.db").open()  # same schema, same pragmas
    store.close()
    conn = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    for b in range(BATCHES):
        rows = [
            (1, b * BATCH + i, 1.8e9 + i / SERIES, i % SERIES, float(i % 100)) for i in range(BATCH)
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return BATCH * BATCHES / elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        api = through_api(Path(tmp))
        raw = raw_executemany(Path(tmp))
    print(f"ingest through the API : {api:,.0f} samples/s ({BATCHES} batches of {BATCH})")
    print(f"raw sqlite executemany : {raw:,.0f} samples/s (same table, same batch size)")
    print(f"ratio api/raw: {api / raw:.2f}  (goal >= 0.50; goal >= 200,000 samples/s)")


if __name__ == "__main__":
    sys.exit(main())
