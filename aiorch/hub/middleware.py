"""Before any route reads a body: authenticate the caller, then refuse oversized and
non-JSON bodies."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiorch.errors import Unauthorized

_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """413 for bodies over the limit (declared or streamed), 415 for the wrong content type:
    JSON everywhere, except upload paths (exact, or matching a pattern of `upload_patterns`),
    which take `application/octet-stream` up to their own limit, and paths under
    `forms_prefix` (the dashboard), which take HTML forms."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        uploads: dict[str, int] | None = None,
        forms_prefix: str | None = None,
        upload_patterns: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads or {}
        self.forms_prefix = forms_prefix
        self.patterns = [(re.compile(k), v) for k, v in (upload_patterns or {}).items()]

    def _upload_limit(self, path: str) -> int | None:
        if path in self.uploads:
            return self.uploads[path]
        return next((limit for pattern, limit in self.patterns if pattern.fullmatch(path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        upload_limit = self._upload_limit(scope["path"])
        limit = upload_limit or self.max_bytes
        wanted = b"application/octet-stream" if upload_limit else b"application/json"
        if self.forms_prefix and scope["path"].startswith(self.forms_prefix):
            wanted = b"application/x-www-form-urlencoded"
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, f"request body over the limit of {limit} bytes")
            return
        has_body = length is None or int(length) > 0
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if has_body and ctype != wanted:
            shown = ctype.decode(errors="replace") or "none"
            await _reply(send, 415, f"content type must be {wanted.decode()}, got {shown}")
            return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            # Past the limit, answer 413 ourselves and tell the app the client went away;
            # whatever the app then tries to send is dropped.
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit and not refused:
                refused = True
                await _reply(send, 413, f"request body over the limit of {limit} bytes")
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


class AuthFirst:
    """Authenticate every request that carries a body before anything judges or reads the
    body, so an unauthenticated caller learns nothing but 401 (not 413, 415 or 422: FastAPI
    parses a JSON body before it runs a route's dependencies). The routes in `own_auth`
    authenticate themselves (the agent protocol) or need no credential (enrollment) and are
    passed through. The principal is handed on in the request state, so the route's
    dependencies do not look it up again; the body is never loaded here."""

    def __init__(
        self,
        app: ASGIApp,
        authenticate: Callable[[str | None], Any],
        own_auth: Sequence[BaseRoute],
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.own_auth = own_auth
        # Route matching costs ~15 us, on every check-in; an agent's paths repeat, so remember.
        self._passes = functools.lru_cache(maxsize=65_536)(self._self_authenticating)

    def _self_authenticating(self, method: str, path: str, root_path: str) -> bool:
        scope = {"type": "http", "method": method, "path": path, "root_path": root_path}
        return any(route.matches(scope)[0] is not Match.NONE for route in self.own_auth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or self._passes(scope["method"], scope["path"], scope.get("root_path", ""))
        ):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        try:
            principal = self.authenticate(header.decode("latin-1") if header else None)
        except Unauthorized as exc:
            await _reply(send, 401, str(exc))
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
