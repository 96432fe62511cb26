"""Connections that send nothing, or too slowly, cannot starve the hub.

uvicorn times a connection out only between requests: one that never sends a request, or
stops halfway through its headers or body, holds a file descriptor forever, and a few
hundred of them leave none for `/healthz` or the agents' check-ins. So each connection
gets a deadline for its request head and an inactivity limit for its body, and past
`max_connections` a new connection makes room by closing the longest-idle one (an idle
connection is only a kept-alive socket; a busy one is never cut). The errors a flood
provokes are logged at most once per interval per kind, with a count of the rest.

It also hands the app what uvicorn does not: the client certificate the TLS layer verified,
as DER in `scope["extensions"]["tls"]["client_cert_der"]`, read once per connection (a resumed
TLS session carries it too).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FD_RESERVE = 64  # descriptors kept for the database, logs, run pipes and the listening sockets
RATE_LIMITED_LOGGERS = ("asyncio", "uvicorn.error")


def default_max_connections() -> int:
    """What the process's descriptor limit leaves after FD_RESERVE (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, soft - max(FD_RESERVE, soft // 8))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float = 10.0  # from connecting (or a request's first byte) to its head
    body_timeout_s: float = 30.0  # the longest silence while a request body is arriving


def protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with `limits` applied (uvicorn's `http=` setting)."""
    return type("GuardedHttpProtocol", (_GuardedHttpProtocol,), {"limits": limits})


class _GuardedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False  # between a request's first byte and the end of its response
        self._idle_since = self.loop.time()
        self._tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._tls = {"client_cert_der": ssl_object.getpeercert(binary_form=True)}
        self._arm(self.limits.header_timeout_s)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]
        self._busy = True
        self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm(self.limits.body_timeout_s)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._busy = False
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._close)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()  # frees the descriptor now: a TLS close waits for the peer

    def _make_room(self) -> None:
        """Close the longest-idle other connection; if every other one is busy, this one."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, _GuardedHttpProtocol)
            and c is not self
            and not c._busy
            and not c.transport.is_closing()
        ]
        victim = min(idle, key=lambda c: c._idle_since) if idle else self
        victim._close()


class RateLimitedLog(logging.Filter):
    """Lets one record per kind (its message's first line) through per `interval_s`; the
    next one let through says how many were held back."""

    MAX_KINDS = 1000  # forgets everything past this, so varied messages cannot grow it

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = str(record.msg).split("\n", 1)[0][:200]
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        if len(self._last) >= self.MAX_KINDS:
            self._last.clear()
            self._held.clear()
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.interval_s:g} s)"
        return True


def rate_limit_logs(interval_s: float = 10.0) -> None:
    """Rate-limit the loggers a connection flood fills: asyncio's accept errors, uvicorn's."""
    limiter = RateLimitedLog(interval_s)
    for name in RATE_LIMITED_LOGGERS:
        logging.getLogger(name).addFilter(limiter)
