"""Restarts the agent made, per container: the count the report shows, and the backoff that
keeps a container which exits right away from being restarted every round forever.

Podman's own RestartCount only counts its restart policy, and the agent restarts containers
itself (also after a reboot), so the count is kept here, in the state dir, and survives
agent restarts. Recent restart times are kept in memory only: after an agent restart a crash
loop is noticed again within a few restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.state import read_json, write_private

WINDOW_S = 600.0  # restarts this recent count towards a crash loop
CRASH_LOOP = 5  # restarts within the window: the workload has failed
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 300.0


class RestartLog:
    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        data = read_json(path) or {}
        self._counts: dict[str, int] = {
            str(k): int(v) for k, v in (data.get("restarts") or {}).items()
        }
        self._recent: dict[str, list[float]] = {}

    def count(self, container_id: str) -> int:
        return self._counts.get(container_id, 0)

    def recent(self, container_id: str) -> int:
        """Restarts within the crash-loop window."""
        cutoff = self.clock() - WINDOW_S
        times = [t for t in self._recent.get(container_id, []) if t > cutoff]
        self._recent[container_id] = times
        return len(times)

    def crash_looping(self, container_id: str) -> bool:
        return self.recent(container_id) >= CRASH_LOOP

    def wait_s(self, container_id: str) -> float:
        """Seconds until the next restart is allowed: none for the first in the window, then
        5 s, 10 s, 20 s, ... up to 5 min after the previous one."""
        recent = self.recent(container_id)
        if recent == 0:
            return 0.0
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (recent - 1))
        return max(0.0, self._recent[container_id][-1] + delay - self.clock())

    def record(self, container_id: str) -> None:
        self._counts[container_id] = self.count(container_id) + 1
        self._recent.setdefault(container_id, []).append(self.clock())
        self._save()

    def keep_only(self, container_ids: set[str]) -> None:
        """Forget removed containers (a replacement starts again from zero)."""
        gone = set(self._counts) - container_ids
        for container_id in set(self._recent) - container_ids:
            del self._recent[container_id]
        if gone:
            for container_id in gone:
                del self._counts[container_id]
            self._save()

    def _save(self) -> None:
        write_private(self.path, {"restarts": self._counts})
