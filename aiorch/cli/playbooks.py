"""`aiorch playbooks`: the hub's playbook sets (aiorch's own and operators'), each version kept
by content digest; `aiorch provision --set NAME` runs from one."""

from __future__ import annotations

from pathlib import Path

import typer

from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state

playbooks_app = typer.Typer(help="Playbook sets on the hub: list, import.", no_args_is_help=True)

COLUMNS = ["name", "current", "digest", "source", "collections", "files", "registered_at"]


@playbooks_app.command("list")
def playbooks_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List every version of every playbook set; `current` is what `provision --set` runs."""
    emit(state(ctx).client().get("/playbook-sets"), output, COLUMNS)


@playbooks_app.command("import")
def playbooks_import(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The set's name, e.g. ops."),
    folder: Path = typer.Argument(..., help="Its folder (playbooks, roles/, ansible.cfg)."),
    collection: list[Path] = typer.Option(
        [],
        "--collection",
        "-c",
        help="A collection tarball, folder or installed tree; repeatable.",
    ),
) -> None:
    """Import FOLDER as the current version of set NAME (global admin). The paths are read by
    the hub, on the hub's machine: run this there, or name paths the hub sees."""
    body = {
        "name": name,
        "path": str(folder.absolute()),
        "collections": [str(c.absolute()) for c in collection],
    }
    made = state(ctx).client().post("/playbook-sets", body)
    print(f"playbook set {made['name']}: {made['digest']}")
