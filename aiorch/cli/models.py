"""`aiorch model`: the hub's model store, for sites that get weights without a bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.errors import UserError
from edge_agent.digest import sha256_file

model_app = typer.Typer(help="The hub's model store (weights for workloads).", no_args_is_help=True)


def model_files(directory: Path) -> list[tuple[str, Path]]:
    """Every regular file under `directory`, by its '/'-separated path inside it."""
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    files = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise UserError(f"{path} is a symlink: copy the file itself into the model")
        if path.is_file():
            files.append((path.relative_to(directory).as_posix(), path))
    if not files:
        raise UserError(f"{directory} holds no files")
    return files


@model_app.command("push")
def model_push(
    ctx: typer.Context,
    directory: Path,
    name: str = typer.Option(..., "--name", help="The name specs use for it."),
    project: str = typer.Option("default", help="Its project ('default' serves every one)."),
    output: Output = OutputOpt,
) -> None:
    """Upload the files under DIRECTORY as model NAME; prints the digest specs pin."""
    client = state(ctx).client()
    entries = []
    for relpath, path in model_files(directory):
        sha = sha256_file(path)
        client.upload("/models/blobs", path, sha256=sha, project=project)
        entries.append({"path": relpath, "sha256": sha, "size": path.stat().st_size})
    emit(client.post("/models", {"name": name, "project": project, "files": entries}), output)


@model_app.command("list")
def model_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List the models in the hub's store with their digests."""
    columns = ["name", "digest", "project", "files", "size", "created_at"]
    emit(state(ctx).client().get("/models"), output, columns)
