"""Sign-in with an API token, and sign-out.

The sign-in form has no session yet, so its CSRF check is a double submit: a random token in a
SameSite=Strict cookie and the same token in the form. Cookies are HttpOnly and SameSite=Strict,
and Secure whenever the hub is reached over TLS.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from aiorch.errors import Forbidden, Unauthorized
from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context
from aiorch.hub.services import ui_sessions
from aiorch.hub.ui.deps import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    UiUser,
    posted,
    read_form,
)
from aiorch.hub.ui.render import page

router = APIRouter()


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )


def _login_page(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", None, status, csrf_token=token, error=error)
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _login_page(request)


@router.post("/login", response_model=None)
async def login(request: Request, ctx: HubContext = Depends(context)) -> Response:
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not ui_sessions.csrf_matches(expected, form.get(CSRF_FIELD)):
        raise Forbidden("missing or wrong CSRF token; reload the sign-in page and try again")
    token = form.get("token", "").strip()
    try:
        session_id, _, expires = ui_sessions.sign_in(ctx, f"Bearer {token}")
    except Unauthorized as exc:
        return _login_page(request, f"Sign-in refused: {exc}", status=401)
    response = RedirectResponse("/ui/", status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, session_id, int(expires - ctx.clock()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui")
    return response


@router.post("/logout")
def logout(
    request: Request, user: UiUser = Depends(posted), ctx: HubContext = Depends(context)
) -> RedirectResponse:
    ui_sessions.sign_out(ctx, user.session_id, user.principal)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response
