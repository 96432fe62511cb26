"""`aiorch audit`: the newest audit log entries, and `aiorch audit verify`, which checks that
nobody edited, removed, reordered or rolled back any of them."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from aiorch.audit_verify import verify
from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.hub.settings import HubSettings

app = typer.Typer(help="The audit log: who did what, and proof that nobody rewrote it.")

TAMPERED = 2  # the exit status of a failed verification (1: it could not run)


@app.callback(invoke_without_command=True)
def entries(
    ctx: typer.Context,
    limit: int = typer.Option(50, min=1, max=10_000),
    action: str = typer.Option(None, help="Only this action, e.g. token.create."),
    output: Output = OutputOpt,
) -> None:
    """Show the newest audit log entries (`aiorch audit` with no subcommand)."""
    if ctx.invoked_subcommand is None:
        rows = state(ctx).client().get("/audit", limit=limit, action=action)
        emit(rows, output, ["id", "ts", "actor", "action", "target", "detail"])


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    data_dir: Path = typer.Option(
        None, help="The hub's data dir (aiorch.db, audit.pub, audit-checkpoints.jsonl)."
    ),
    checkpoint: list[Path] = typer.Option(
        [], help="A checkpoint held elsewhere, e.g. an agent's audit-checkpoint.json; repeatable."
    ),
    output: Output = OutputOpt,
) -> None:
    """Recompute the audit hash chain and check every signed checkpoint against it; exits 2
    naming the first bad row or checkpoint."""
    directory = data_dir or state(ctx).data_dir
    report = verify(HubSettings(data_dir=directory).db_path, directory, checkpoint)
    if output is Output.json:
        emit(report.to_json(), output)
    elif report.ok:
        print(
            f"audit log intact: {report.rows} rows, head {report.head}, "
            f"{report.checkpoints} checkpoints verified"
        )
    for problem in [] if output is Output.json else report.problems:
        print(f"aiorch: audit: {problem}", file=sys.stderr)
    if not report.ok:
        raise typer.Exit(TAMPERED)
