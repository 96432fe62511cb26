"""Jobs from the CLI: `jobs submit|list|show|logs|cancel`; `plan|apply -f` hand `kind: Job`
specs here."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
import yaml

from aiorch.cli.client import HubClient
from aiorch.cli.output import Output, console, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.errors import UserError

jobs_app = typer.Typer(help="Training and batch jobs: a GPU queue.", no_args_is_help=True)
FileOpt = typer.Option(..., "--file", "-f", help="Job spec (YAML, kind: Job).")
FINAL = ("succeeded", "failed", "cancelled", "timed_out")
FOLLOW_S = 2.0
COLUMNS = ["name", "project", "state", "priority", "gpus", "attempts", "reason", "submitted_at"]


def read_spec(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def is_job(text: str) -> bool:
    """Whether a spec file holds a job (its `kind`), so plan and apply send it to /jobs."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return False  # the hub names the problem, with its line
    return isinstance(document, dict) and document.get("kind") == "Job"


def shown_state(job: dict[str, Any]) -> str:
    return job["state"] if job.get("confirmed", True) else f"{job['state']} (unconfirmed)"


def show_job(job: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        emit(job, output)
        return
    console.print(f"[bold]{job['name']}[/] project {job['project']}: {shown_state(job)}"
                  + (f" ({job['reason']})" if job.get("reason") else ""))  # fmt: skip
    attempt = job.get("attempt")
    if attempt:
        gpus = (f"{attempt['simulated_gpus']} simulated GPU(s)" if attempt["simulated_gpus"]
                else f"GPUs {attempt['gpus']}")  # fmt: skip
        console.print(f"attempt {attempt['id']} on {attempt['host']} ({gpus}): {attempt['state']}")
    console.print(f"GPU-hours used {job['gpu_hours_used']:.2f}, reserved "
                  f"{job['gpu_hours_reserved']:.2f}")  # fmt: skip
    if job.get("events"):
        emit(job["events"], output, ["ts", "from", "to", "reason", "attempt"])


def plan_job(client: HubClient, text: str, output: Output) -> None:
    result = client.post("/jobs/plan", {"spec": text})
    if output is Output.json:
        emit(result, output)
        return
    verb = "exists already" if result["exists"] else "would be queued"
    console.print(f"[bold]job {result['name']}[/] (project {result['project']}) {verb}: "
                  f"{result['gpus']} GPU(s), {result['gpu_hours_reserved']:.2f} GPU-hours "
                  "reserved at admission")  # fmt: skip


def submit_job(client: HubClient, text: str, output: Output) -> None:
    show_job(client.post("/jobs", {"spec": text}), output)


@jobs_app.command("submit")
def jobs_submit(ctx: typer.Context, file: Path = FileOpt, output: Output = OutputOpt) -> None:
    """Queue the job in FILE; the hub admits and places it when GPUs and budget allow."""
    submit_job(state(ctx).client(), read_spec(file), output)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    project: str = typer.Option(None, help="Only this project's jobs."),
    job_state: str = typer.Option(None, "--state", help="Only jobs in this state."),
    output: Output = OutputOpt,
) -> None:
    """List jobs, newest first."""
    params = {k: v for k, v in (("project", project), ("state", job_state)) if v is not None}
    rows = state(ctx).client().get("/jobs", **params)
    if output is Output.table:
        rows = [{**r, "state": shown_state(r)} for r in rows]
    emit(rows, output, COLUMNS)


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show job NAME: its state and reason, current attempt, GPU-hours and transitions."""
    show_job(state(ctx).client().get(f"/jobs/{name}"), output)


@jobs_app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    name: str,
    attempt: str = typer.Option(None, help="An earlier attempt's id [the current one]."),
    follow: bool = typer.Option(False, "--follow", "-F", help="Keep printing until it ends."),
) -> None:
    """Print the end of job NAME's log, as its agent last sent it."""
    client = state(ctx).client()
    params = {} if attempt is None else {"attempt": attempt}
    shown = ""
    while True:
        # The state first: once it is final, the log read after it is the last one.
        ended = not follow or client.get(f"/jobs/{name}")["state"] in FINAL
        tail = client.get(f"/jobs/{name}/logs", **params)["log_tail"]
        sys.stdout.write(tail[len(shown) :] if tail.startswith(shown) else tail)
        sys.stdout.flush()
        shown = tail
        if ended:
            return
        time.sleep(FOLLOW_S)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Cancel job NAME: at once if it is not running, else its agent stops it."""
    show_job(state(ctx).client().post(f"/jobs/{name}/cancel", {}), output)
