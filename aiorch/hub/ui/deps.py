"""Who is signed in to the dashboard, and the CSRF check on everything it posts.

A page without a live session redirects to the sign-in page (LoginRequired, turned into a 303,
or HX-Redirect for an htmx request, in router.py). A post must carry the session's CSRF token
in a field named `csrf_token` (or htmx's X-CSRF-Token header): without it, 403 before the
route runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import Request

from aiorch.errors import Forbidden, InvalidInput, Unauthorized
from aiorch.hub.context import HubContext
from aiorch.hub.services import ui_sessions
from aiorch.hub.services.auth import Principal

SESSION_COOKIE = "aiorch_session"
LOGIN_CSRF_COOKIE = "aiorch_login_csrf"  # the sign-in form's double-submit token
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"  # what htmx sends (base.html's hx-headers) for posts outside forms
MAX_FORM_BYTES = 64 * 1024


class LoginRequired(Exception):
    """No live session: the answer is the sign-in page, not an error."""


@dataclass(frozen=True)
class UiUser:
    principal: Principal
    session_id: str
    csrf: str

    @property
    def name(self) -> str:
        return self.principal.id


async def read_form(request: Request) -> dict[str, str]:
    """The posted form (application/x-www-form-urlencoded; BodyGuard refuses other types)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput(f"form over {MAX_FORM_BYTES} bytes")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError as exc:
        raise InvalidInput("form is not UTF-8") from exc


def _session_user(request: Request) -> UiUser | None:
    ctx: HubContext = request.app.state.ctx
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    try:
        principal = ui_sessions.principal(ctx, session_id)
    except Unauthorized:
        return None
    return UiUser(principal, session_id, ui_sessions.csrf_token(session_id))


async def signed_in(request: Request) -> UiUser:
    user = _session_user(request)
    if user is None:
        raise LoginRequired
    return user


async def posted(request: Request) -> UiUser:
    """A signed-in user's post that carries the session's CSRF token, else 403 (a post is
    never redirected: whatever it asked for is refused); the form is kept in
    `request.state.form` for the route (a body is read once)."""
    user = _session_user(request)
    if user is None:
        raise Forbidden("not signed in (or the session has ended); sign in at /ui/login")
    form = await read_form(request)
    presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not ui_sessions.csrf_matches(user.csrf, presented):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")
    request.state.form = form
    return user
