"""Deployments from the CLI: `plan`, `apply`, `deployments`, `delete`, `image`, `quota`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aiorch.cli.output import Output, console, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.errors import UserError

deployments_app = typer.Typer(help="Model-serving deployments.", no_args_is_help=True)
image_app = typer.Typer(help="The hub's image store (no registry needed).", no_args_is_help=True)
quota_app = typer.Typer(help="Per-project quotas.", no_args_is_help=True)

SpecOpt = typer.Option(..., "--file", "-f", help="Deployment spec (YAML).")


def _spec(path: Path) -> dict[str, str]:
    try:
        return {"spec": path.read_text()}
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _show_plan(result: dict[str, Any]) -> None:
    plan = result["plan"]
    for key in ("placed", "kept", "moved", "removed"):
        for item in plan[key]:
            replica = item.get("replica", item)
            console.print(f"  {key:<8} replica {replica['ordinal']} on {replica['host']}")
    for item in plan["unplaced"]:
        console.print(f"  [red]unplaced[/] replica {item['ordinal']}: {item['reason']}")
    for decision in result.get("decisions", []):
        console.print(
            f"  policy {decision['policy']}: {decision['outcome']} ({decision['reason']})"
        )
    if not plan["changed"] and not plan["unplaced"]:
        console.print("  no changes")


def plan_cmd(ctx: typer.Context, file: Path = SpecOpt, output: Output = OutputOpt) -> None:
    """Show what applying SPEC would change (replicas placed, moved, removed); change nothing."""
    result = state(ctx).client().post("/deployments/plan", _spec(file))
    if output is Output.json:
        emit(result, output)
        return
    console.print(f"[bold]plan for {result['name']}[/] (project {result['project']})")
    _show_plan(result)


def apply_cmd(ctx: typer.Context, file: Path = SpecOpt, output: Output = OutputOpt) -> None:
    """Apply SPEC; the same spec twice changes nothing."""
    result = state(ctx).client().post("/deployments", _spec(file))
    if output is Output.json:
        emit(result, output)
        return
    changed = "applied" if result["changed"] else "unchanged"
    console.print(f"[bold]{result['name']}[/] {changed}")
    _show_plan(result)


def delete_cmd(ctx: typer.Context, name: str) -> None:
    """Delete deployment NAME; its agents stop its containers."""
    state(ctx).client().delete(f"/deployments/{name}")
    print(f"deleted deployment {name}")


@deployments_app.command("list")
def deployments_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List deployments with their replica counts."""
    rows = state(ctx).client().get("/deployments")
    emit(rows, output, ["name", "project", "replicas", "generation", "updated_by", "updated_at"])


@deployments_app.command("show")
def deployments_show(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show a deployment's replicas, hosts and the state their agents report."""
    data = state(ctx).client().get(f"/deployments/{name}")
    if output is Output.json:
        emit(data, output)
        return
    console.print(f"[bold]{data['name']}[/] project {data['project']} gen {data['generation']}")
    emit(data["replicas"], output, ["replica", "host", "gpus", "state", "reason"])


@image_app.command("push")
def image_push(
    ctx: typer.Context,
    file: Path,
    ref: str = typer.Option(..., help="The name[:tag] specs use for it."),
    output: Output = OutputOpt,
) -> None:
    """Store an image archive (`podman save` output) in the hub, content-addressed."""
    if not file.is_file():
        raise UserError(f"{file} is not a file")
    emit(state(ctx).client().upload("/images", file, ref=ref), output)


@image_app.command("list")
def image_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List the images in the hub's store."""
    emit(state(ctx).client().get("/images"), output, ["ref", "digest", "size", "created_at"])


@quota_app.command("set")
def quota_set(
    ctx: typer.Context,
    project: str,
    gpus: int = typer.Option(None, min=0, help="Most GPUs the project may hold."),
    replicas: int = typer.Option(None, min=0, help="Most replicas the project may run."),
    output: Output = OutputOpt,
) -> None:
    """Set PROJECT's quota (admin)."""
    body = {"max_gpus": gpus, "max_replicas": replicas}
    emit(state(ctx).client().put(f"/quotas/{project}", body), output)
