"""`aiorch ca`: the hub CA's pin and rotation."""

from __future__ import annotations

import typer

from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state

ca_app = typer.Typer(help="The hub's certificate authority.", no_args_is_help=True)
PHASES = "init, update_clients, update_servers, standby"


@ca_app.command("show")
def ca_show(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """The CAs, the pin enrollment tokens carry, and the rotation phase."""
    shown = state(ctx).client().get("/ca")
    if output is Output.json:
        emit(shown, output)
        return
    print(f"pin {shown['token_pin']}  phase {shown['phase']} (next: {shown['next_phase']})")
    emit(shown["cas"], output, ["id", "state", "pin", "not_after"])


@ca_app.command("rotate")
def ca_rotate(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help=f"The phase to move to, in order: {PHASES}."),
    output: Output = OutputOpt,
) -> None:
    """Advance the CA rotation one phase. Leave each phase in force longer than agents stay
    offline; an agent that misses the whole rotation still comes back (renewing by proof)."""
    shown = state(ctx).client().post("/ca/rotate", {"phase": to})
    if output is Output.json:
        emit(shown, output)
    else:
        print(f"CA rotation now in phase {shown['phase']}; next: {shown['next_phase']}")
