"""`aiorch bundle import|list|trust`: the hub's side of content bundles, over the API.

The hub reads the bundle from its own disk (carried there on media), so `import` sends the
directory's absolute path, not its bytes. `attach` adds these commands to the local
`aiorch bundle` app (keygen, create, verify: aiorch.bundle.cli).
"""

from __future__ import annotations

from pathlib import Path

import typer

from aiorch.bundle.keys import load_public
from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state

IMPORT_TIMEOUT_S = 3600.0  # verifying and copying tens of gigabytes takes minutes
IMPORT_COLUMNS = ["version", "name", "digest", "key_id", "expires", "imported_at", "current"]

trust_app = typer.Typer(help="The keys the hub trusts to sign bundles.", no_args_is_help=True)


def import_cmd(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="The bundle directory, as the hub sees it."),
    allow_downgrade: bool = typer.Option(
        False, "--allow-downgrade", help="Accept a version older than the newest imported."
    ),
    output: Output = OutputOpt,
) -> None:
    """Have the hub verify and import a bundle from its disk and make it current."""
    client = state(ctx).client()
    client.timeout = IMPORT_TIMEOUT_S
    body = {"path": str(directory.absolute()), "allow_downgrade": allow_downgrade}
    emit(client.post("/bundles/import", body), output)


def list_cmd(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """The bundles the hub imported, newest first; the current one marked."""
    emit(state(ctx).client().get("/bundles"), output, IMPORT_COLUMNS)


@trust_app.command("add")
def trust_add(
    ctx: typer.Context,
    public_key: Path = typer.Argument(..., help="A bundle.pub (aiorch bundle keygen)."),
    output: Output = OutputOpt,
) -> None:
    """Trust a bundle signing key."""
    text = load_public(public_key).to_text()  # a wrong file fails here, in one line
    emit(state(ctx).client().post("/bundles/trust", {"public_key": text}), output)


@trust_app.command("list")
def trust_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """The bundle signing keys the hub trusts."""
    emit(state(ctx).client().get("/bundles/trust"), output, ["key_id", "added_by", "added_at"])


@trust_app.command("remove")
def trust_remove(
    ctx: typer.Context,
    key_id: str = typer.Argument(..., help="ed25519:<16 hex>, from `trust list`."),
    force: bool = typer.Option(
        False, "--force", help="Remove even the last trusted key (e.g. one that leaked)."
    ),
) -> None:
    """Stop trusting a key. Rotation: add the new key, import a bundle it signed, remove
    the old one."""
    suffix = "?force=true" if force else ""
    state(ctx).client().delete(f"/bundles/trust/{key_id}{suffix}")
    print(f"bundle key {key_id} is no longer trusted")


def attach(bundle_app: typer.Typer) -> None:
    """Add the hub-side commands to `aiorch bundle`."""
    bundle_app.command("import")(import_cmd)
    bundle_app.command("list")(list_cmd)
    bundle_app.add_typer(trust_app, name="trust")
