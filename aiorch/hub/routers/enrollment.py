"""Enrollment tokens (operators), and the routes an agent uses before it has a working
certificate: enrollment itself, and renewal by proof of its old key."""

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import EnrollRequest, EnrollTokenCreate, ProofRenewRequest
from aiorch.hub.services import agent_identity, enrollment
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/enroll-tokens", tags=["enrollment"])
public = APIRouter(tags=["enrollment"])


@router.post("", status_code=201)
def create_enroll_token(
    body: EnrollTokenCreate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("enroll_token.create")),
) -> dict[str, Any]:
    return enrollment.create_token(
        ctx, body.site, body.ttl_s, body.uses, p.actor, host=body.host, replace=body.replace
    )


@router.get("")
def list_enroll_tokens(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("enroll_token.read"))
) -> list[dict]:
    return enrollment.list_tokens(ctx)


@router.delete("/{token_id}", status_code=204)
def revoke_enroll_token(
    token_id: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("enroll_token.revoke")),
) -> None:
    enrollment.revoke_token(ctx, token_id, p.actor)


@public.get("/ca-bundle", response_class=PlainTextResponse)
def ca_bundle(ctx: HubContext = Depends(context)) -> str:
    """The hub's CAs, public by nature: an enrolling agent checks them against its token's pin
    before it sends the token."""
    return ctx.authority.bundle_pem()


@public.post("/enroll", status_code=201)
def enroll(body: EnrollRequest, ctx: HubContext = Depends(context)) -> dict[str, Any]:
    """The token in the body is the proof; the answer is the agent's first certificate."""
    return enrollment.enroll(ctx, body.token, body.csr, body.facts, body.agent_version)


@public.post("/renew-nonce")
def renew_nonce(ctx: HubContext = Depends(context)) -> dict[str, Any]:
    """A one-use nonce for a renewal by proof."""
    return agent_identity.issue_nonce(ctx)


@public.post("/renew-by-proof")
def renew_by_proof(body: ProofRenewRequest, ctx: HubContext = Depends(context)) -> dict[str, Any]:
    """Renew a certificate that expired offline (within the site's grace window) or came from a
    retired CA, by a signature of its key over a nonce and the new CSR."""
    return agent_identity.renew_by_proof(
        ctx, body.certificate, body.csr, body.nonce, body.signature
    )
