"""Everything under /ui, put on the app in one call: the pages, the static assets, and the
answer to a page asked for without a session (the sign-in page)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from aiorch.hub.ui import audit, deployments, fleet, runs, sign_in, usage
from aiorch.hub.ui.deps import LoginRequired
from aiorch.hub.ui.render import STATIC_DIR

PREFIX = "/ui"
STATIC = f"{PREFIX}/static"


def ui_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    for module in (sign_in, fleet, deployments, runs, usage, audit):
        router.include_router(module.router)
    return router


async def _to_sign_in(request: Request, _: Exception) -> Response:
    if request.headers.get("hx-request"):  # htmx swaps a fragment: send the whole page away
        return Response(status_code=200, headers={"HX-Redirect": f"{PREFIX}/login"})
    return RedirectResponse(f"{PREFIX}/login", status_code=303)


def mount(app: FastAPI, router: APIRouter) -> None:
    """The pages (each authenticates by its session cookie), and the assets, which are public:
    the sign-in page needs them, and they hold no data."""
    app.include_router(router)
    app.mount(STATIC, StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_exception_handler(LoginRequired, _to_sign_in)
    app.add_api_route(PREFIX, lambda: RedirectResponse(f"{PREFIX}/"), include_in_schema=False)
