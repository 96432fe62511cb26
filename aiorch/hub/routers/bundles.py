"""Content bundles: import one from the hub's disk, list the imports, and the signing keys
the hub trusts (services/bundles.py and services/bundle_trust.py decide)."""

from typing import Any

from fastapi import APIRouter, Depends

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import BundleImportInfo, BundleImportRequest, BundleKeyAdd, BundleKeyInfo
from aiorch.hub.services import bundle_trust, bundles
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/bundles", tags=["bundles"])


@router.get("", response_model=list[BundleImportInfo])
def list_imports(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("bundle.read"))
) -> list[dict[str, Any]]:
    return bundles.list_imports(ctx)


@router.post("/import", response_model=BundleImportInfo)
def import_bundle(
    body: BundleImportRequest,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("bundle.import")),
) -> dict[str, Any]:
    """Verify and import a bundle the hub reads from its own disk; minutes for a large one,
    in the thread pool (a sync route), never on the event loop or the writer thread."""
    return bundles.import_bundle(ctx, body.path, p.actor, allow_downgrade=body.allow_downgrade)


@router.get("/trust", response_model=list[BundleKeyInfo])
def list_keys(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("bundle.read"))
) -> list[dict[str, Any]]:
    return bundle_trust.list_keys(ctx)


@router.post("/trust", status_code=201, response_model=BundleKeyInfo)
def add_key(
    body: BundleKeyAdd,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("bundle.trust")),
) -> dict[str, Any]:
    return bundle_trust.add(ctx, body.public_key, p.actor)


@router.delete("/trust/{key_id}", status_code=204)
def remove_key(
    key_id: str,
    force: bool = False,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("bundle.trust")),
) -> None:
    """Stop trusting a key; the last one, while content is imported, only with force."""
    bundle_trust.remove(ctx, key_id, p.actor, force=force)
