"""Refuse oversized and non-JSON bodies before any route reads them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """413 for bodies over the limit (declared or streamed), 415 for the wrong content type:
    JSON everywhere, except upload paths, which take `application/octet-stream` up to their
    own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        upload_limit = self.uploads.get(scope["path"])
        limit = upload_limit or self.max_bytes
        wanted = b"application/octet-stream" if upload_limit else b"application/json"
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
