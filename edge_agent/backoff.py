"""When to talk to the hub next: the hub's interval with jitter, exponential backoff on failure,
and the hub's Retry-After when it gives one."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Schedule:
    interval_s: float = 30.0
    max_backoff_s: float = 300.0
    jitter: float = 0.2
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def succeeded(self, interval_s: float | None = None) -> float:
        """After a good exchange: the (possibly new) interval, +/- jitter so agents spread out."""
        self.failures = 0
        if interval_s:
            self.interval_s = interval_s
        return self.interval_s * (1 + self.rng.uniform(-self.jitter, self.jitter))

    def failed(self, retry_after_s: float | None = None) -> float:
        """After a failure: Retry-After if the hub said so, else full-jitter exponential backoff."""
        self.failures += 1
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_backoff_s)
        ceiling = min(self.max_backoff_s, self.interval_s * 2 ** min(self.failures, 16))
        return self.rng.uniform(min(1.0, ceiling), ceiling)
