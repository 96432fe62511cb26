"""Request-scoped dependencies: the hub context and the authenticated principal.

They are async on purpose: they only read (one primary-key lookup at most), and running
them on the event loop spares every request several thread-pool hops.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aiorch.hub.context import HubContext
from aiorch.hub.services import auth
from aiorch.hub.services.auth import Principal

_bearer = HTTPBearer(auto_error=False, description="API token or agent credential")


async def context(request: Request) -> HubContext:
    ctx: HubContext = request.app.state.ctx
    return ctx


async def principal(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    header = f"{creds.scheme} {creds.credentials}" if creds else None
    return auth.authenticate(request.app.state.ctx, header)


async def viewer(p: Principal = Depends(principal)) -> Principal:
    auth.require_role(p, "viewer")
    return p


async def operator(p: Principal = Depends(principal)) -> Principal:
    auth.require_role(p, "operator")
    return p


async def admin(p: Principal = Depends(principal)) -> Principal:
    auth.require_role(p, "admin")
    return p
