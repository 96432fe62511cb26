"""Lasting failures, logged once: an agent that retries every few seconds for days must not
write the same line to the journal each time, yet the operator must learn what is wrong."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Trouble:
    """One kind of failure (the outbox's file, the hub's refusals). A failure is logged when it
    starts or its `key` changes, again at most every `repeat_s` while it lasts, and its end
    once."""

    def __init__(
        self,
        logger: logging.Logger,
        repeat_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.repeat_s = repeat_s
        self.clock = clock
        self.key: str | None = None
        self.logged_at = 0.0

    @property
    def active(self) -> bool:
        """A failure was logged and has not ended yet."""
        return self.key is not None

    def failing(self, key: str, message: str, *args: object) -> None:
        """Log `message % args` at error level, unless `key` was logged within `repeat_s`."""
        now = self.clock()
        if key == self.key and now - self.logged_at < self.repeat_s:
            return
        self.logger.error(message, *args)
        self.key, self.logged_at = key, now

    def over(self, message: str, *args: object) -> None:
        """The failure has ended: say so, once."""
        if self.key is not None:
            self.logger.warning(message, *args)
            self.key = None
