"""`aiorch machines`: servers from power-off to ready, through their BMC and the ramdisk."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
import yaml

from aiorch.cli.output import Output, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.errors import UserError

machines_app = typer.Typer(
    help="Machines: BMC power and boot, inventory, burn-in, wipe.", no_args_is_help=True
)
COLUMNS = ["name", "state", "reason", "mac", "hardware_class", "simulated"]
CREDENTIALS_ENV = "AIORCH_BMC_CREDENTIALS"


def read_credentials(path: Path | None) -> tuple[str, str]:
    """USER:PASSWORD from a file ('-': standard input) or AIORCH_BMC_CREDENTIALS, never argv."""
    if path is not None:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read BMC credentials from {path}: {exc}") from None
    else:
        text = os.environ.get(CREDENTIALS_ENV, "")
    if not text.strip():
        return "", ""
    user, sep, password = text.strip().partition(":")
    if not sep:
        where = path or CREDENTIALS_ENV
        raise UserError(f"BMC credentials in {where} want USER:PASSWORD on one line")
    return user, password


def _post(ctx: typer.Context, path: str, body: dict[str, Any], output: Output) -> None:
    emit(state(ctx).client().post(path, body), output)


@machines_app.command("enroll")
def enroll(
    ctx: typer.Context,
    name: str,
    bmc: str = typer.Option(
        ..., help="redfish+http://HOST:PORT/redfish/v1/Systems/ID, ipmi://HOST"
    ),
    mac: str = typer.Option(..., help="The MAC of the NIC it network-boots from."),
    credentials: Path = typer.Option(
        None, help=f"File holding USER:PASSWORD for the BMC ('-': stdin; or ${CREDENTIALS_ENV})."
    ),
    hardware_class: str = typer.Option("default", "--class", help="Its hardware class."),
    output: Output = OutputOpt,
) -> None:
    """Enroll machine NAME: its BMC must answer with these credentials."""
    user, password = read_credentials(credentials)
    body = {"name": name, "bmc": bmc, "mac": mac, "username": user, "password": password,
            "hardware_class": hardware_class}  # fmt: skip
    _post(ctx, "/machines", body, output)


@machines_app.command("list")
def list_cmd(
    ctx: typer.Context,
    state_filter: str = typer.Option(None, "--state", help="Only machines in this state."),
    output: Output = OutputOpt,
) -> None:
    """List the machines and where each is in its lifecycle."""
    params = {"state": state_filter} if state_filter else {}
    emit(state(ctx).client().get("/machines", **params), output, COLUMNS)


@machines_app.command("show")
def show(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show machine NAME: state, inventory, burn-in figures, wipe record, history."""
    emit(state(ctx).client().get(f"/machines/{name}"), output)


@machines_app.command("inspect")
def inspect(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """PXE-boot the ramdisk once: inventory, then the hardware class's burn-in."""
    _post(ctx, f"/machines/{name}/inspect", {}, output)


@machines_app.command("accept")
def accept(
    ctx: typer.Context,
    name: str,
    force: bool = typer.Option(False, help="Take a quarantined machine anyway (audited)."),
    output: Output = OutputOpt,
) -> None:
    """Make an accepted machine ready for provisioning."""
    _post(ctx, f"/machines/{name}/accept", {"force": force}, output)


@machines_app.command("provision")
def provision(
    ctx: typer.Context,
    name: str,
    image: str = typer.Option(..., help="A root image in the hub's AIORCH_METAL_IMAGE_DIR."),
    root_disk: str = typer.Option(None, help="The disk to write (default: smallest that fits)."),
    site: str = typer.Option("default", help="The site the new host's agent enrolls into."),
    output: Output = OutputOpt,
) -> None:
    """Write IMAGE onto a ready machine's disk and boot it; its agent then enrolls."""
    body = {"image": image, "root_disk": root_disk, "site": site}
    _post(ctx, f"/machines/{name}/provision", body, output)


@machines_app.command("release")
def release(
    ctx: typer.Context,
    name: str,
    wipe: str = typer.Option("metadata", help="metadata (wipefs, first and last MiB) or secure."),
    output: Output = OutputOpt,
) -> None:
    """Wipe the machine's disks in the ramdisk; it is ready again once they are."""
    _post(ctx, f"/machines/{name}/release", {"wipe": wipe}, output)


@machines_app.command("power")
def power(ctx: typer.Context, name: str, action: str, output: Output = OutputOpt) -> None:
    """Power machine NAME on, off or cycle through its BMC."""
    _post(ctx, f"/machines/{name}/power", {"action": action}, output)


@machines_app.command("maintenance")
def maintenance(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Take machine NAME out of the lifecycle."""
    _post(ctx, f"/machines/{name}/maintenance", {}, output)


@machines_app.command("exit-maintenance")
def exit_maintenance(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Bring machine NAME back, to be inspected again."""
    _post(ctx, f"/machines/{name}/exit-maintenance", {}, output)


@machines_app.command("retire")
def retire(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Retire machine NAME for good."""
    _post(ctx, f"/machines/{name}/retire", {}, output)


@machines_app.command("classes")
def classes(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List the hardware classes with their timeouts and burn-in floors."""
    emit(state(ctx).client().get("/machine-classes"), output, ["name", "profile"])


@machines_app.command("class-set")
def class_set(
    ctx: typer.Context,
    name: str,
    file: Path = typer.Option(..., "--file", "-f", help="YAML: timeouts and burn_in."),
    output: Output = OutputOpt,
) -> None:
    """Create or replace hardware class NAME from a YAML profile."""
    try:
        profile = yaml.safe_load(file.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {file}: {exc}") from None
    emit(state(ctx).client().put(f"/machine-classes/{name}", profile), output)
