"""Request-scoped dependencies: the hub context and the authenticated principal."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aiorch.hub.context import HubContext
from aiorch.hub.services import auth
from aiorch.hub.services.auth import Principal

_bearer = HTTPBearer(auto_error=False, description="API token or agent credential")


def context(request: Request) -> HubContext:
    ctx: HubContext = request.app.state.ctx
    return ctx


def principal(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    header = f"{creds.scheme} {creds.credentials}" if creds else None
    return auth.authenticate(context(request), header)


def viewer(p: Principal = Depends(principal)) -> Principal:
    auth.require_role(p, "viewer")
    return p


def operator(p: Principal = Depends(principal)) -> Principal:
    auth.require_role(p, "operator")
    return p


def admin(p: Principal = Depends(principal)) -> Principal:
    auth.require_role(p, "admin")
    return p


def agent_self(agent_id: str, p: Principal = Depends(principal)) -> Principal:
    auth.require_agent(p, agent_id)
    return p
