"""Bare metal at fleet scale: 500 machines in inspection at once, on one hub.

The BMCs are sushy-emulator's fake driver (simulated: one emulator holds all 500 systems)
and each machine's ramdisk is a simulated client that does what the real one does on the
wire: it fetches its iPXE script from the boot listener, takes its boot token from the
kernel line, posts its inventory and then its burn-in result. Reported: how long the hub
takes to put all 500 into inspection (a BMC boot-once and power-on each), how long until all
are accepted, the longest any machine spent in a step against the step's timeout, and any 5xx.
Baseline in the same run: one machine's whole cycle on the idle hub.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from aiorch.hub.process import HubProcess, free_port
from aiorch.lab.bmc_emulators import FakeSystem, SushyEmulator
from aiorch.metal.profile import Timeouts

MACHINES = 500
CONCURRENCY = 32  # operator-side API calls in flight (a script driving the CLI in parallel)
TOKEN = re.compile(r"aiorch\.token=(\S+)")
BURN_IN = {"kind": "burn_in", "ok": True, "measured": {"cpu_bogo_ops_per_s": 1000.0}}


def mac(i: int) -> str:
    return f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def inventory(i: int) -> dict[str, object]:
    return {
        "boot_mac": mac(i), "system": {"manufacturer": "simulated", "serial": f"B{i}"},
        "cpus": 64, "memory_bytes": 512 << 30,
        "disks": [{"name": "nvme0n1", "size_bytes": 4 << 40, "serial": f"B{i}-D0"}],
        "nics": [{"name": "eth0", "mac": mac(i)}], "pci": [],
    }  # fmt: skip


class Fleet:
    def __init__(self, hub: HubProcess, bmc: SushyEmulator, boot_url: str) -> None:
        self.hub, self.bmc, self.boot_url = hub, bmc, boot_url
        self.tls = ssl.create_default_context(cafile=str(hub.ca_path))
        self.statuses: Counter[int] = Counter()
        self.entered: dict[int, float] = {}  # machine -> when its inspect call returned
        self.accepted: dict[int, float] = {}

    def api(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.hub.admin_token}"}
        limits = httpx.Limits(max_connections=CONCURRENCY)
        return httpx.AsyncClient(base_url=f"{self.hub.url}/api/v1", headers=headers,
                                 verify=self.tls, timeout=300, limits=limits)  # fmt: skip

    async def _call(self, client: httpx.AsyncClient, method: str, path: str, **kw: object) -> dict:
        response = await client.request(method, path, **kw)  # type: ignore[arg-type]
        self.statuses[response.status_code] += 1
        response.raise_for_status()
        return dict(response.json())

    async def set_class(self, profile: dict[str, object]) -> None:
        async with self.api() as client:
            await self._call(client, "PUT", "/machine-classes/bench", json=profile)

    async def enroll_and_inspect(self, machines: range) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)
        async with self.api() as client:

            async def one(i: int) -> None:
                async with gate:
                    system = self.bmc.systems[i]
                    body = {"name": f"m{i}", "bmc": self.bmc.system_url(system.uuid),
                            "mac": mac(i), "username": "admin", "password": self.bmc.password,
                            "hardware_class": "bench"}  # fmt: skip
                    await self._call(client, "POST", "/machines", json=body)
                    await self._call(client, "POST", f"/machines/m{i}/inspect")
                    self.entered[i] = time.perf_counter()

            await asyncio.gather(*(one(i) for i in machines))

    async def ramdisks(self, machines: range) -> None:
        """Every machine's simulated ramdisk at once, as a rack powering on together."""
        async with httpx.AsyncClient(timeout=300) as boot, httpx.AsyncClient(
            base_url=f"{self.hub.url}/api/v1/ramdisk", verify=self.tls, timeout=300,
            limits=httpx.Limits(max_connections=len(machines)),
        ) as api:  # fmt: skip

            async def one(i: int) -> None:
                script = (await boot.get(f"{self.boot_url}/boot/{mac(i)}.ipxe")).text
                found = TOKEN.search(script)
                assert found, script
                auth = {"Authorization": f"Bearer {found.group(1)}"}
                for path, body in (("/inventory", inventory(i)), ("/result", BURN_IN)):
                    answer = await api.post(path, json=body, headers=auth)
                    self.statuses[answer.status_code] += 1
                    answer.raise_for_status()
                self.accepted[i] = time.perf_counter()

            await asyncio.gather(*(one(i) for i in machines))


def main() -> None:
    total = MACHINES + 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        systems = [FakeSystem(uuid=str(uuid.uuid4()), name=f"m{i}", macs=[mac(i)])
                   for i in range(total)]  # fmt: skip
        ramdisk = work / "ramdisk"
        ramdisk.mkdir()
        (ramdisk / "vmlinuz").write_bytes(b"simulated")
        (ramdisk / "initrd.gz").write_bytes(b"simulated")
        boot_port = free_port()
        hub = HubProcess(work / "hub", serve_args=["--boot-listen", f"127.0.0.1:{boot_port}"])
        os.environ["AIORCH_METAL_HUB_URL"] = hub.url
        os.environ["AIORCH_METAL_RAMDISK_DIR"] = str(ramdisk)
        with SushyEmulator(work / "bmc", systems) as bmc:
            hub.start()
            try:
                fleet = Fleet(hub, bmc, f"http://127.0.0.1:{boot_port}")
                asyncio.run(fleet.set_class({"burn_in": {"cpu_seconds": 1}}))
                t0 = time.perf_counter()
                asyncio.run(fleet.enroll_and_inspect(range(1)))
                asyncio.run(fleet.ramdisks(range(1)))
                baseline = time.perf_counter() - t0
                t0 = time.perf_counter()
                asyncio.run(fleet.enroll_and_inspect(range(1, total)))
                inspecting = time.perf_counter() - t0
                t1 = time.perf_counter()
                asyncio.run(fleet.ramdisks(range(1, total)))
                reported = time.perf_counter() - t1
            finally:
                hub.stop()
    first_in = min(fleet.entered[i] for i in range(1, total))
    longest = max(fleet.accepted[i] - fleet.entered[i] for i in range(1, total))
    longest_any = max(fleet.accepted[i] - first_in for i in range(1, total))
    limit = Timeouts().inspecting
    errors = sum(n for status, n in fleet.statuses.items() if status >= 500)
    print(f"one machine's cycle on an idle hub (enroll, inspect, script, inventory, burn-in): "
          f"{baseline:.2f} s (baseline)")  # fmt: skip
    print(
        f"{MACHINES} machines enrolled and put into inspection (BMC boot-once + power-on each,"
        f" {CONCURRENCY} calls in flight): {inspecting:.1f} s, {MACHINES / inspecting:.1f}/s"
    )
    print(
        f"{MACHINES} simulated ramdisks at once (script, inventory, burn-in result): all "
        f"accepted after {reported:.1f} s ({reported / baseline:.1f}x the baseline)"
    )
    print(f"longest wait in a step: {longest_any:.1f} s from the first inspect "
          f"({longest:.1f} s after its own), timeout {limit:.0f} s: "
          f"{longest_any / limit:.1%} of it")  # fmt: skip
    print(f"answers: {dict(fleet.statuses)}; 5xx: {errors} (goal: 0)")
    if errors or len(fleet.accepted) != total or longest_any >= limit:
        sys.exit(1)


if __name__ == "__main__":
    main()
