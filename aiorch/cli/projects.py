"""`aiorch projects`: projects, the roles tokens hold on them, and their placement policy."""

from __future__ import annotations

import typer

from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state

projects_app = typer.Typer(
    help="Projects: who may do what on them, and where their workloads may run.",
    no_args_is_help=True,
)

_COLUMNS = ["name", "allowed_sites", "allowed_regions", "host_path_prefixes", "created_at"]


def _names(text: str | None) -> list[str] | None:
    """'a,b' as a list; '' clears the list; not given leaves it as it is."""
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


@projects_app.command("create")
def project_create(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Create project NAME (global admin)."""
    emit(state(ctx).client().post("/projects", {"name": name}), output)


@projects_app.command("list")
def project_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List the projects you hold a role on (every project for a global admin)."""
    emit(state(ctx).client().get("/projects"), output, _COLUMNS)


@projects_app.command("show")
def project_show(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show project NAME: its policy, quota and the tokens holding a role on it."""
    emit(state(ctx).client().get(f"/projects/{name}"), output)


@projects_app.command("set")
def project_set(
    ctx: typer.Context,
    name: str,
    allow_sites: str = typer.Option(None, help="Sites it may place on, a,b ('' for any)."),
    allow_regions: str = typer.Option(None, help="Regions it may place in, r1,r2."),
    host_path_prefix: list[str] = typer.Option(
        None, help="A path its hostPath volumes may mount under (repeat for more)."
    ),
    clear_host_paths: bool = typer.Option(False, help="Allow no hostPath volumes at all."),
    output: Output = OutputOpt,
) -> None:
    """Set project NAME's placement and hostPath policy (global admin)."""
    body = {"allowed_sites": _names(allow_sites), "allowed_regions": _names(allow_regions),
            "host_path_prefixes": [] if clear_host_paths else host_path_prefix or None}  # fmt: skip
    changes = {key: value for key, value in body.items() if value is not None}
    emit(state(ctx).client().patch(f"/projects/{name}", changes), output)


@projects_app.command("grant")
def project_grant(
    ctx: typer.Context, project: str, token_id: str, role: str, output: Output = OutputOpt
) -> None:
    """Give token TOKEN_ID the ROLE (viewer, operator, admin) on PROJECT (admin there)."""
    emit(state(ctx).client().put(f"/projects/{project}/roles/{token_id}", {"role": role}), output)


@projects_app.command("revoke")
def project_revoke(ctx: typer.Context, project: str, token_id: str) -> None:
    """Take token TOKEN_ID's role on PROJECT away (its roles elsewhere stay)."""
    state(ctx).client().delete(f"/projects/{project}/roles/{token_id}")
    print(f"token {token_id} has no role on project {project} any more")
