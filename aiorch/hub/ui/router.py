"""Everything under /ui, put on the app in one call: the pages, the static assets, and the
answer to a page asked for without a session (the sign-in page)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from aiorch.hub.ui import audit, deployments, fleet, hosts, jobs, runs, sign_in, usage
from aiorch.hub.ui.deps import LoginRequired
from aiorch.hub.ui.render import STATIC_DIR

PREFIX = "/ui"
STATIC = f"{PREFIX}/static"


# Each page module's `router`, its paths relative to /ui.
PAGES = (sign_in, fleet, hosts, deployments, jobs, runs, usage, audit)


def ui_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    for module in PAGES:
        router.include_router(module.router)
    return router


def operations() -> list[tuple[str, str]]:
    """(method, full path) of every dashboard route, for the tests that cover them all."""
    return [
        (method, PREFIX + route.path)
        for module in PAGES
        for route in module.router.routes
        if isinstance(route, APIRoute)
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]


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
