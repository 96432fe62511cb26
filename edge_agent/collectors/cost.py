"""What monitoring costs the host: time per collector, and the agent's own memory and CPU."""

from __future__ import annotations

from collections.abc import Mapping

import psutil

from edge_agent.outbox import Sample


class AgentCost:
    def __init__(self) -> None:
        self._process = psutil.Process()

    def samples(
        self, now: float, durations_ns: Mapping[str, int], errors: Mapping[str, int]
    ) -> list[Sample]:
        """`durations_ns` from time.perf_counter_ns per collector this round; `errors` counts
        each collector's failures since the agent started."""
        out: list[Sample] = [
            (now, "agent_collector_duration_seconds", ns / 1e9, {"collector": name})
            for name, ns in durations_ns.items()
        ]
        out += [
            (now, "agent_collector_errors_total", float(n), {"collector": name})
            for name, n in errors.items()
        ]
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        out.append((now, "agent_resident_memory_bytes", float(rss), {}))
        out.append((now, "agent_cpu_seconds_total", cpu.user + cpu.system, {}))
        return out
