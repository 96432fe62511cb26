"""Connections that send nothing, or too slowly, cannot starve the hub.

uvicorn times a connection out only between requests: one that never sends a request, or
stops halfway through its headers or body, holds a file descriptor forever, and a few
hundred of them leave none for `/healthz` or the agents' check-ins. So each connection
gets a deadline for its request head and an inactivity limit for its body, and past
`max_connections` a new connection makes room by closing the longest-idle one (an idle
connection is only a kept-alive socket; a busy one is never cut). The errors a flood
provokes are logged at most once per interval per kind, with a count of the rest.

TLS is started here, not by the event loop's server, so that the guard covers the handshake
too: a connection that never completes one counts against `max_connections` from its accept
and is closed to make room like an idle one, or after `handshake_timeout_s`. And it hands the
app what uvicorn does not: the client certificate the TLS layer verified, as DER in
`scope["extensions"]["tls"]["client_cert_der"]`, read once per connection (a resumed TLS
session carries it too).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
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
    # From the accept to a finished TLS handshake. Long enough for a reconnect storm, in which
    # thousands of handshakes queue for the CPU; a flood of connections that never finish one
    # is held off by closing the longest-idle when descriptors run short, not by this.
    handshake_timeout_s: float = 60.0


def protocol_class(
    limits: ConnectionLimits, tls: ssl.SSLContext | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with `limits` applied (uvicorn's `http=` setting), which
    speaks TLS with `tls` (the server then listens without an SSL context of its own)."""
    return type("GuardedHttpProtocol", (_GuardedHttpProtocol,), {"limits": limits, "tls": tls})


class _GuardedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]
    tls: ClassVar[ssl.SSLContext | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False  # between a request's first byte and the end of its response
        self._idle_since = self.loop.time()
        self._tls: dict[str, Any] | None = None
        self._raw: asyncio.Transport | None = None  # the TCP transport while TLS starts
        self._early: list[bytes] = []  # a request that came with the handshake's last flight

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.tls is not None and self._raw is None:
            self._start_tls(transport)
            return
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._tls = {"client_cert_der": ssl_object.getpeercert(binary_form=True)}
        self._arm(self.limits.header_timeout_s)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()
        if self._early:
            early, self._early = b"".join(self._early), []
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # TLS is up but the HTTP side not yet: hold it
            self._early.append(data)
            return
        super().data_received(data)

    def _start_tls(self, raw: asyncio.Transport) -> None:
        """Counted and timed from the accept on; the HTTP side starts once TLS is up."""
        raw.pause_reading()  # nothing reaches the HTTP parser before the handshake
        self._raw = raw
        self.connections.add(self)
        self._arm(self.limits.handshake_timeout_s)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()
        self.loop.create_task(self._handshake(raw))

    async def _handshake(self, raw: asyncio.Transport) -> None:
        assert self.tls is not None
        try:
            secure = await self.loop.start_tls(
                raw, self, self.tls, server_side=True,
                ssl_handshake_timeout=self.limits.handshake_timeout_s,
            )  # fmt: skip
        except (TimeoutError, OSError, ssl.SSLError, RuntimeError):
            secure = None
        if secure is None or secure.is_closing():
            self._disarm()
            self.connections.discard(self)
            raw.close()
            return
        self.connections.discard(self)
        self.connection_made(secure)

    def _current(self) -> asyncio.Transport | None:
        return self.transport if self.transport is not None else self._raw

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """At hub shutdown an idle connection is dropped at once: a TLS close would wait up
        to 30 s for each kept-alive agent's close_notify, and the hub would not stop."""
        if not self._busy:
            self._close()
            return
        super().shutdown()

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
        transport = self._current()
        if transport is not None and not transport.is_closing():
            transport.abort()  # frees the descriptor now: a TLS close waits for the peer

    def _make_room(self) -> None:
        """Close the longest-idle other connection; if every other one is busy, this one."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, _GuardedHttpProtocol)
            and c is not self
            and not c._busy
            and (transport := c._current()) is not None
            and not transport.is_closing()
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
