"""`aiorch tokens` and `aiorch enroll-token`: credentials for people and for new agents."""

from __future__ import annotations

import typer

from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.deploy.fields import duration_seconds
from aiorch.errors import UserError

token_app = typer.Typer(help="API tokens for people and automation.", no_args_is_help=True)
enroll_app = typer.Typer(
    help="Enrollment tokens that new agents trade for a credential.", no_args_is_help=True
)


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h', '7d' or plain seconds; a one-line error otherwise."""
    try:
        value = duration_seconds(text)
    except ValueError:
        raise UserError(f"bad duration {text!r}: use e.g. 90s, 15m, 1h or 7d") from None
    if value <= 0:
        raise UserError(f"duration must be positive, got {text!r}")
    return value


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: str = typer.Option(None, help="viewer, operator or admin, on --project."),
    project: str = typer.Option("default", help="The project the role is on."),
    global_admin: bool = typer.Option(False, "--global-admin", help="Admin of the whole hub."),
    expires: str = typer.Option("90d", help="Lifetime, e.g. 12h, 30d (at most 366d)."),
    name: str = typer.Option("", help="A note saying who or what uses it."),
    output: Output = OutputOpt,
) -> None:
    """Create an API token with a role on one project (or global admin); it is shown once."""
    if role is None and not global_admin:
        raise UserError("give --role (on --project) or --global-admin")
    body = {"name": name, "project": project, "global_admin": global_admin,
            "expires_s": parse_duration(expires)}  # fmt: skip
    if role is not None:
        body["role"] = role
    emit(state(ctx).client().post("/tokens", body), output)


@token_app.command("list")
def token_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List API tokens and their roles (never their secrets)."""
    rows = state(ctx).client().get("/tokens")
    columns = ["id", "name", "global_admin", "roles", "expires_at", "revoked_at", "created_by"]
    emit(rows, output, columns)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke an API token by id."""
    state(ctx).client().delete(f"/tokens/{token_id}")
    print(f"revoked token {token_id}")


@enroll_app.command("create")
def enroll_create(
    ctx: typer.Context,
    site: str = typer.Option(..., help="Site the enrolling hosts belong to."),
    ttl: str = typer.Option("1h", help="Lifetime, e.g. 15m, 1h, 7d."),
    uses: int = typer.Option(1, min=1, help="How many agents may enroll with it."),
    host: str = typer.Option(None, help="Only this host may enroll with it."),
    replace: bool = typer.Option(
        False, "--replace", help="With --host: replace the agent that host has (a reinstall)."
    ),
    output: Output = OutputOpt,
) -> None:
    """Create an enrollment token for SITE; it is shown once, with the hub CA's pin in it
    (`aiorch-agent enroll` checks the hub against it before sending the token)."""
    body = {"site": site, "ttl_s": parse_duration(ttl), "uses": uses, "host": host}
    created = state(ctx).client().post("/enroll-tokens", {**body, "replace": replace})
    if output is Output.json:
        emit(created, output)
    else:
        print(created["token"])


@enroll_app.command("list")
def enroll_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List enrollment tokens with their uses and status."""
    rows = state(ctx).client().get("/enroll-tokens")
    emit(rows, output, ["id", "site", "status", "uses", "max_uses", "expires_at", "created_by"])


@enroll_app.command("revoke")
def enroll_revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke an enrollment token by id."""
    state(ctx).client().delete(f"/enroll-tokens/{token_id}")
    print(f"revoked enrollment token {token_id}")
