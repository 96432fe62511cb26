"""Dashboard sign-in: an API token, proven once, becomes a session cookie.

The cookie holds a random session id; the store keeps only its hash, so a copy of the database
signs nobody in. The session carries no roles of its own: every request looks the token up
again (`auth.user_by_token_id`), so revoking the token ends its sessions at once. The CSRF
token of a session is an HMAC of its id: forms carry it, a forging site cannot compute it, and
nothing more is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlite_utils

from aiorch.errors import Unauthorized
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, auth
from aiorch.hub.services.auth import Principal


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The CSRF token bound to one session."""
    return hmac.new(session_id.encode(), b"aiorch-ui-csrf", hashlib.sha256).hexdigest()


def csrf_matches(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected, presented)


def sign_in(ctx: HubContext, authorization: str) -> tuple[str, Principal, float]:
    """A new session for a user token (agents' credentials are refused): its id, the user,
    and when it expires (never after the token does)."""
    user = auth.authenticate(ctx, authorization)
    if user.kind != "user":
        raise Unauthorized("sign in with an API token, not an agent credential")
    now = ctx.clock()
    token_expires = (
        ctx.store.read()
        .execute("SELECT expires_at FROM api_tokens WHERE id = ?", [user.id])
        .fetchone()[0]
    )
    expires = now + ctx.settings.ui_session_s
    if token_expires is not None:
        expires = min(expires, token_expires)
    session_id = secrets.token_urlsafe(32)

    def op(db: sqlite_utils.Database) -> None:
        db.execute("DELETE FROM ui_sessions WHERE expires_at <= ?", [now])
        db.execute(
            "INSERT INTO ui_sessions (id_hash, token_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            [_hash(session_id), user.id, now, expires],
        )
        audit.record(db, user.actor, "ui.sign_in", f"token:{user.id}", ts=now)

    ctx.store.write(op)
    return session_id, user, expires


def principal(ctx: HubContext, session_id: str) -> Principal:
    """The user a live session belongs to; Unauthorized when it is unknown or over."""
    row = (
        ctx.store.read()
        .execute(
            "SELECT token_id, expires_at FROM ui_sessions WHERE id_hash = ?", [_hash(session_id)]
        )
        .fetchone()
    )
    if row is None or row[1] <= ctx.clock():
        raise Unauthorized("not signed in, or the session has ended")
    return auth.user_by_token_id(ctx, row[0])


def sign_out(ctx: HubContext, session_id: str, user: Principal) -> None:
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        db.execute("DELETE FROM ui_sessions WHERE id_hash = ?", [_hash(session_id)])
        audit.record(db, user.actor, "ui.sign_out", f"token:{user.id}", ts=now)

    ctx.store.write(op)
