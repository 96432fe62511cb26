"""Request-scoped dependencies: the hub context, the authenticated principal, and the
authorization of the route's action (services/authz.py decides).

They are async on purpose: they only read (a primary-key lookup or two at most), and running
them on the event loop spares every request several thread-pool hops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from aiorch.errors import NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import auth, authz
from aiorch.hub.services.auth import Principal

# An upload route's body in the OpenAPI document: raw bytes (BodyGuard sizes them).
OCTET_STREAM_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI body of a route that parses its JSON itself (after authenticating)."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


_bearer = HTTPBearer(auto_error=False, description="API token or agent credential")

Check = Callable[..., Awaitable[Principal]]


async def context(request: Request) -> HubContext:
    ctx: HubContext = request.app.state.ctx
    return ctx


async def principal(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:  # authenticated before its body was read (middleware.AuthFirst)
        return known
    header = f"{creds.scheme} {creds.credentials}" if creds else None
    return auth.authenticate(request.app.state.ctx, header)


def allow(action: str, resource: authz.Resource = authz.FLEET) -> Check:
    """A dependency that lets the caller through only if it may do `action` on `resource`;
    project-scoped routes pass ANY_PROJECT and check the object's own project once known."""

    async def check(p: Principal = Depends(principal)) -> Principal:
        authz.authorize(p, action, resource)
        return p

    return check


def allow_on_path_project(action: str, param: str = "project") -> Check:
    """`action` on the project named by the path parameter `param`."""

    async def check(request: Request, p: Principal = Depends(principal)) -> Principal:
        authz.authorize(p, action, authz.in_project(request.path_params[param]))
        return p

    return check


def authorize_object(p: Principal, action: str, kind: str, name: str, project: str) -> None:
    """`action` on object `name` of `project`: one in a project the caller holds no role in is
    answered as if it did not exist, so names in other projects stay unknown."""
    if not p.is_global_admin and project not in p.projects:
        raise NotFound(f"no {kind} named {name}")
    authz.authorize(p, action, authz.in_project(project, kind))
