"""Playbook sets: list every stored version; import one from a folder on the hub's disk."""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, Field

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import Strict, absolute_path
from aiorch.hub.services import playbook_sets
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/playbook-sets", tags=["playbook-sets"])

HubPath = Annotated[str, AfterValidator(absolute_path)]


class PlaybookSetImport(Strict):
    name: str = Field(min_length=1, max_length=64, description="The set's name, e.g. ops.")
    path: HubPath = Field(description="A folder on the hub's disk: playbooks, roles, ansible.cfg.")
    collections: list[HubPath] = Field(
        default_factory=list,
        max_length=100,
        description="Collection tarballs, folders or installed trees, on the hub's disk.",
    )


@router.get("")
def list_sets(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("playbook_set.read"))
) -> list[dict[str, Any]]:
    """Every version of every set, the current one of each name marked."""
    return playbook_sets.list_sets(ctx)


@router.post("", status_code=201)
def import_set(
    body: PlaybookSetImport,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("playbook_set.import")),
) -> dict[str, Any]:
    """Store the folder (and its collections) as the set's current version (global admin)."""
    digest = playbook_sets.import_from(
        ctx, body.name, Path(body.path), [Path(c) for c in body.collections], p.actor
    )
    return {"name": body.name, "digest": digest}
