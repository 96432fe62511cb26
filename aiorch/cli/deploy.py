"""Deployments from the CLI: `plan`, `apply`, `deployments`, `delete`, `rollout`, `image`,
`quota`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from aiorch.cli import jobs
from aiorch.cli.output import Output, console, emit
from aiorch.cli.runs import FAILED_EXIT, POLL_S
from aiorch.cli.state import OutputOpt, state
from aiorch.deploy.rollout import ACTIVE, UNSUCCESSFUL
from aiorch.errors import UserError

deployments_app = typer.Typer(help="Model-serving deployments.", no_args_is_help=True)
image_app = typer.Typer(help="The hub's image store (no registry needed).", no_args_is_help=True)
quota_app = typer.Typer(help="Per-project quotas.", no_args_is_help=True)
rollout_app = typer.Typer(
    help="Rollouts of new revisions: status, pause, resume, undo.", no_args_is_help=True
)

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
        replicas = "replica" if item["count"] == 1 else "replicas"
        console.print(f"  [red]unplaced[/] {item['count']} {replicas}: {item['reason']}")
    for decision in result.get("decisions", []):
        console.print(
            f"  policy {decision['policy']}: {decision['outcome']} ({decision['reason']})"
        )
    if not plan["changed"] and not plan["unplaced"]:
        console.print("  no changes")


def plan_cmd(ctx: typer.Context, file: Path = SpecOpt, output: Output = OutputOpt) -> None:
    """Show what applying SPEC would change (replicas placed, moved, removed; for a job, what
    submitting it would queue); change nothing."""
    body = _spec(file)
    if jobs.is_job(body["spec"]):
        jobs.plan_job(state(ctx).client(), body["spec"], output)
        return
    result = state(ctx).client().post("/deployments/plan", body)
    if output is Output.json:
        emit(result, output)
        return
    console.print(f"[bold]plan for {result['name']}[/] (project {result['project']})")
    _show_plan(result)


def apply_cmd(ctx: typer.Context, file: Path = SpecOpt, output: Output = OutputOpt) -> None:
    """Apply SPEC; the same spec twice changes nothing. A job (`kind: Job`) is submitted."""
    body = _spec(file)
    if jobs.is_job(body["spec"]):
        jobs.submit_job(state(ctx).client(), body["spec"], output)
        return
    result = state(ctx).client().post("/deployments", body)
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
    columns = ["name", "project", "replicas", "revision", "generation", "updated_by", "updated_at"]
    emit(rows, output, columns)


@deployments_app.command("show")
def deployments_show(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show a deployment's replicas, hosts and the state their agents report."""
    data = state(ctx).client().get(f"/deployments/{name}")
    if output is Output.json:
        emit(data, output)
        return
    console.print(
        f"[bold]{data['name']}[/] project {data['project']} gen {data['generation']} "
        f"revision {data['revision']}"
    )
    if (scaling := data.get("autoscale")) is not None:
        console.print(_autoscale_line(scaling))
    emit(data["replicas"], output, ["replica", "host", "revision", "state", "reason"])


def _autoscale_line(scaling: dict[str, Any]) -> str:
    """`autoscale: 2 replicas, load 3 (all reported), desired 3 since <time>`."""
    load = "no load reported" if scaling.get("load") is None else f"load {scaling['load']:g}"
    if scaling.get("load") is not None and not scaling.get("complete"):
        load += " (some replicas not reporting: never scales down)"
    line = f"autoscale: {scaling['replicas']} replicas, {load}, desired {scaling['desired']}"
    if scaling.get("since") is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(scaling["since"]))
        line += f" (wanted {scaling['wanted']} since {since} UTC)"
    return line


@image_app.command("push")
def image_push(
    ctx: typer.Context,
    file: Path,
    ref: str = typer.Option(..., help="The name[:tag] specs use for it."),
    project: str = typer.Option("default", help="Its project ('default' serves every one)."),
    output: Output = OutputOpt,
) -> None:
    """Store an image archive (`podman save` output) in the hub, content-addressed."""
    if not file.is_file():
        raise UserError(f"{file} is not a file")
    emit(state(ctx).client().upload("/images", file, ref=ref, project=project), output)


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
    gpu_hours: float = typer.Option(None, min=0, help="GPU-hours its jobs may use a period."),
    period: str = typer.Option(None, help="The budget's period: day, week or month [month]."),
    output: Output = OutputOpt,
) -> None:
    """Set PROJECT's quota and GPU-hour budget (admin); what is not given is no limit."""
    body = {"max_gpus": gpus, "max_replicas": replicas, "gpu_hours": gpu_hours,
            "budget_period": period}  # fmt: skip
    emit(state(ctx).client().put(f"/quotas/{project}", body), output)


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context,
    name: str,
    wait: bool = typer.Option(
        False, "--wait", help="Wait until the rollout ends and every online replica is healthy."
    ),
    timeout: float = typer.Option(600, min=1, help="Seconds --wait waits at most."),
    output: Output = OutputOpt,
) -> None:
    """Show NAME's revisions, its latest rollout and its replicas; exit 2 if it failed."""
    client = state(ctx).client()
    data = client.get(f"/deployments/{name}/rollout")
    deadline = time.monotonic() + timeout
    while wait and not _settled(data):
        if time.monotonic() >= deadline:
            raise UserError(f"timed out after {timeout:g}s waiting for the rollout of {name}")
        time.sleep(POLL_S)
        data = client.get(f"/deployments/{name}/rollout")
    _show_rollout(data, output)
    rollout = data["rollout"]
    if rollout is not None and rollout["state"] in UNSUCCESSFUL:
        raise typer.Exit(FAILED_EXIT)


def _settled(data: dict[str, Any]) -> bool:
    rollout = data["rollout"]
    if rollout is not None and rollout["state"] in ACTIVE:
        return False
    if rollout is not None and rollout["state"] in UNSUCCESSFUL:
        return True  # no point waiting on replicas: the rollout is over
    online = [r for r in data["replicas"] if r["online"]]
    return all(r["updated"] and r["state"] == "healthy" for r in online)


def _show_rollout(data: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        emit(data, output)
        return
    console.print(
        f"[bold]{data['name']}[/] revision {data['revision']} (stable {data['stable_revision']})"
    )
    rollout = data["rollout"]
    if rollout is not None:
        waves = rollout["waves"]
        console.print(
            f"rollout #{rollout['id']}: revision {rollout['from_revision']} -> "
            f"{rollout['to_revision']}, {rollout['strategy']}, {rollout['state']}, "
            f"wave {min(rollout['wave'], len(waves))}/{len(waves)}"
            + (f" ({rollout['reason']})" if rollout["reason"] else "")
        )
    emit(data["replicas"], output, ["replica", "host", "revision", "online", "state", "reason"])


def _rollout_action(ctx: typer.Context, name: str, action: str, output: Output) -> None:
    _show_rollout(state(ctx).client().post(f"/deployments/{name}/rollout/{action}", {}), output)


@rollout_app.command("pause")
def rollout_pause(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Hold NAME's rollout after its current wave."""
    _rollout_action(ctx, name, "pause", output)


@rollout_app.command("resume")
def rollout_resume(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Go on with NAME's paused rollout."""
    _rollout_action(ctx, name, "resume", output)


@rollout_app.command("undo")
def rollout_undo(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Back to NAME's previous revision: at once if a rollout is under way or failed, else
    rolled out again wave by wave."""
    _rollout_action(ctx, name, "undo", output)
