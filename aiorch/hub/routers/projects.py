"""Projects: create and list them, set their placement and hostPath policy, grant roles."""

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, allow_on_path_project, authorize_object, context
from aiorch.hub.schemas import ProjectCreate, ProjectPolicy, RoleGrant
from aiorch.hub.services import authz, projects
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/projects", tags=["projects"])


class ProjectInfo(BaseModel):
    name: str
    allowed_sites: list[str]
    allowed_regions: list[str]
    host_path_prefixes: list[str]
    created_by: str
    created_at: float


class Quota(BaseModel):
    max_gpus: int | None
    max_replicas: int | None


class Budget(BaseModel):
    """The GPU quota and GPU-hour budget, with what is left of each (None: no limit)."""

    max_gpus: int | None
    gpus_left: int | None
    gpu_hours: float | None
    budget_period: str
    gpu_hours_counted: float  # jobs' used and reserved GPU-hours in this period
    gpu_hours_left: float | None


class Member(BaseModel):
    token_id: str
    name: str
    role: str
    granted_by: str
    granted_at: float


class ProjectDetail(ProjectInfo):
    quota: Quota | None
    budget: Budget
    members: list[Member]


class RoleInfo(BaseModel):
    project: str
    token_id: str
    role: str


@router.post("", status_code=201, response_model=ProjectDetail)
def create_project(
    body: ProjectCreate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("project.create")),
) -> dict:
    return projects.create(ctx, body.name, p.actor)


@router.get("", response_model=list[ProjectInfo])
def list_projects(
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("project.read", authz.ANY_PROJECT)),
) -> list[dict]:
    """The projects the caller holds a role on (every project: global admin)."""
    return projects.list_projects(ctx, authz.visible_projects(p, "project.read"))


@router.get("/{project}", response_model=ProjectDetail)
def show_project(
    project: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("project.read", authz.ANY_PROJECT)),
) -> dict:
    authorize_object(p, "project.read", "project", project, project)
    return projects.show(ctx, project)


@router.patch("/{project}", response_model=ProjectDetail)
def set_policy(
    project: str,
    body: ProjectPolicy,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("project.policy.set")),
) -> dict:
    """Replace the allowed sites, regions or hostPath prefixes (global admin)."""
    return projects.set_policy(ctx, project, body.model_dump(exclude_none=True), p.actor)


@router.put("/{project}/roles/{token_id}", response_model=RoleInfo)
def grant_role(
    project: str,
    token_id: str,
    body: RoleGrant,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow_on_path_project("role.grant")),
) -> dict:
    """Give a token a role on this project (admin on this project needed)."""
    return projects.grant(ctx, project, token_id, body.role, p.actor)


@router.delete("/{project}/roles/{token_id}", status_code=204)
def revoke_role(
    project: str,
    token_id: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow_on_path_project("role.grant")),
) -> None:
    projects.revoke(ctx, project, token_id, p.actor)
