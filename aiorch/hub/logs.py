"""The hub's logs: text for a terminal, or JSON lines for a log pipeline
(`aiorch hub serve --log-format json`). Every record logged while a request is handled carries
that request's id, the one the API echoes in `X-Request-ID`, so a user's error report finds its
log lines. Secrets stay out the same way in both formats: nothing logs a credential, a request
body or a query string."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORMATS = ("text", "json")
REQUEST_ID_HEADER = "X-Request-ID"
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# A caller's own id is kept only if it is short and plain: it is written into every line.
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
access_log = logging.getLogger("aiorch.hub.access")


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def configure(level: str, fmt: str) -> None:
    """Root logging for the hub process, in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.addFilter(_WithRequestId())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RequestIds:
    """Gives each request an id (the caller's `X-Request-ID` when it is plain, else a new one),
    echoes it in the response, and logs the request's outcome: at INFO when it failed (4xx or
    5xx), at DEBUG otherwise (agents check in all the time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            access_log.log(
                logging.INFO if status >= 400 else logging.DEBUG,
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            _request_id.reset(token)
