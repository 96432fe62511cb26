"""The FastAPI application: routers under /api/v1, domain errors mapped to HTTP once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiorch import __version__
from aiorch.errors import AiorchError, Unavailable
from aiorch.hub.context import HubContext
from aiorch.hub.jobs import register_jobs
from aiorch.hub.logs import RequestIds
from aiorch.hub.middleware import AuthFirst, BodyGuard
from aiorch.hub.routers import (
    agent_protocol,
    agents,
    bundles,
    ca,
    deployments,
    enrollment,
    inventory,
    job_artifacts,
    jobs,
    machines,
    models,
    overview,
    playbook_sets,
    projects,
    ramdisk,
    runs,
    system,
    telemetry,
    tokens,
)
from aiorch.hub.routers.deps import allow, principal
from aiorch.hub.services import auth, run_processes
from aiorch.hub.services import runs as run_service
from aiorch.hub.ui import router as ui

log = logging.getLogger("aiorch.hub")
API_PREFIX = "/api/v1"
# Routes without a bearer token: the health probe, and an agent's ways to a certificate.
PUBLIC_PATHS = (
    "/healthz",
    *(f"{API_PREFIX}/{p}" for p in ("enroll", "ca-bundle", "renew-nonce", "renew-by-proof")),
)


def _one_line(exc: RequestValidationError | ValidationError, shown: int = 3) -> str:
    # Bodies parsed by FastAPI carry a leading "body" in their locations; match that for
    # bodies the agent routes parse themselves, so messages read the same everywhere.
    prefix = ("body",) if isinstance(exc, ValidationError) else ()
    errors = exc.errors()
    parts = []
    for err in errors[:shown]:
        where = ".".join(str(x) for x in (*prefix, *err.get("loc", ())))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return ("; ".join(parts) or "invalid request") + more


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AiorchError)
    headers = {"Retry-After": f"{exc.retry_after:.0f}"} if isinstance(exc, Unavailable) else None
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return JSONResponse({"detail": _one_line(exc)}, status_code=422)


def map_errors(app: FastAPI) -> None:
    """Errors to HTTP, once for every app the hub serves (the API and the boot listener)."""
    app.add_exception_handler(AiorchError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)


class _ContainErrors:
    """A 500 for an unexpected error, and the error ends here. Starlette's own handler
    answers and then re-raises, and uvicorn closes a connection whose app raised: the
    agent's kept-alive connection would die with the request, and its next check-in fail
    as "hub unreachable". Only an error after the answer began still closes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            answer = JSONResponse({"detail": "internal error; see the hub log"}, status_code=500)
            await answer(scope, receive, send)


def create_app(ctx: HubContext, *, run_jobs: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # A run left going by a hub that died is over: mark it, free its hosts.
        interrupted = run_processes.recover_interrupted(ctx)
        if interrupted:
            log.warning("runs interrupted by the previous hub process: %s", interrupted)
        scheduler = BackgroundScheduler(daemon=True)
        if run_jobs:
            register_jobs(scheduler, ctx)
            scheduler.start()
        try:
            yield
        finally:
            if run_jobs:
                scheduler.shutdown(wait=False)
            run_service.stop_all(ctx)
            ctx.heartbeats.flush(ctx.store)

    app = FastAPI(
        title="aiorch hub",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    map_errors(app)
    uploads = {
        f"{API_PREFIX}{path}": ctx.settings.max_image_bytes for path in ("/images", models.BLOBS)
    }
    # Routers are included flat (not nested) and the agents' hot path first: route matching
    # is per request, and nested routers multiply its cost.
    app.include_router(agent_protocol.router, prefix=API_PREFIX)
    app.include_router(enrollment.public, prefix=API_PREFIX)
    app.include_router(ramdisk.router, prefix=API_PREFIX)  # a machine's boot token, checked there
    dashboard = ui.ui_router()
    # The two above authenticate themselves or need no bearer; the dashboard's pages go by
    # their session cookie (and their posts by its CSRF token).
    own_auth = [*app.routes, *dashboard.routes]
    app.add_middleware(
        BodyGuard,
        max_bytes=ctx.settings.max_body_bytes,
        uploads=uploads,
        forms_prefix=f"{ui.PREFIX}/",
        upload_patterns={
            f"{API_PREFIX}{agent_protocol.ARTIFACT_UPLOAD}": ctx.settings.max_artifact_bytes
        },
    )
    app.add_middleware(  # runs before BodyGuard: 401 comes before any body check
        AuthFirst, authenticate=lambda header: auth.authenticate(ctx, header), own_auth=own_auth
    )
    app.add_middleware(_ContainErrors)  # it sees every error
    app.add_middleware(RequestIds)  # outermost: every answer, a 500 too, carries its id

    modules = (
        agents, inventory, enrollment, tokens, projects, overview, telemetry, runs, deployments, ca,
        bundles, models, playbook_sets, jobs, job_artifacts, machines,
    )  # fmt: skip
    for module in modules:
        app.include_router(module.router, prefix=API_PREFIX, dependencies=[Depends(principal)])
    app.include_router(telemetry.scrape, dependencies=[Depends(principal)])
    app.include_router(system.router)
    ui.mount(app, dashboard)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(allow("api.schema"))])
    def openapi() -> dict[str, Any]:
        """The API schema, for people and automation with any role."""
        return app.openapi()

    return app
