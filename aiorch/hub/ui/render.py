"""One way to render a page: the template, plus what every page needs (who is signed in, the
CSRF token for its forms, and `can(action)` so buttons follow the user's role), with the
security headers that keep the page from being framed or loading anything from elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from aiorch import __version__
from aiorch.errors import Forbidden
from aiorch.hub.services import authz
from aiorch.hub.ui.deps import UiUser

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")


def timestamp(seconds: float | None) -> str:
    """A stored epoch time as pages show it: UTC, to the second."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["timestamp"] = timestamp

# Nothing but the hub itself: scripts, styles and data come from its own origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def allowed(user: UiUser, action: str, resource: authz.Resource = authz.FLEET) -> bool:
    """Whether the signed-in user may do `action`: what a page shows follows authz's table."""
    try:
        authz.authorize(user.principal, action, resource)
    except Forbidden:
        return False
    return True


def page(
    request: Request,
    template: str,
    user: UiUser | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    values = {
        "user": user,
        "csrf_token": user.csrf if user else context.pop("csrf_token", ""),
        "can": (lambda action, resource=authz.FLEET: allowed(user, action, resource))
        if user
        else (lambda *_: False),
        "version": __version__,
        **context,
    }
    return templates.TemplateResponse(
        request, template, values, status_code=status_code, headers=SECURITY_HEADERS
    )
