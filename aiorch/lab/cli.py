"""`aiorch lab`: up, down, status and fault hooks for the local lab fleet."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from aiorch.cli.output import Output
from aiorch.lab.fleet import Lab
from aiorch.lab.payload import build_payload, payload_digest, payload_ref

app = typer.Typer(help="A local fleet of real systemd+sshd hosts on an air-gapped network.")
fault_app = typer.Typer(help="Break lab hosts on purpose: cut, pause, restart, kill.")
app.add_typer(fault_app, name="fault")
payload_app = typer.Typer(help="The lab's model-serving image, as an archive agents can load.")
app.add_typer(payload_app, name="payload")

NameOpt = Annotated[str, typer.Option("--name", help="Lab name (several labs can coexist).")]
HostsArg = Annotated[list[str], typer.Argument(help="Host names, e.g. dc1-1 edge1-1.")]


@app.command()
def up(
    hosts: Annotated[int, typer.Option("--hosts", "-n", min=1, help="Number of hosts.")] = 3,
    name: NameOpt = "aiorch",
    inventory_dir: Annotated[
        Path, typer.Option(help="Where inventories/lab-<name>/hosts.yml goes.")
    ] = Path("inventories"),
) -> None:
    """Start (or grow) a lab and write its Ansible inventory; prints the inventory path."""
    lab = Lab(name, inventory_dir=inventory_dir)
    path = lab.up(hosts=hosts)
    typer.echo(str(path))


@app.command()
def down(name: NameOpt = "aiorch") -> None:
    """Remove the lab's containers, network, firewall table, keys and inventory."""
    removed = Lab(name).down()
    typer.echo(f"lab {name} removed" if removed else f"lab {name}: nothing to remove")


@app.command()
def status(
    name: NameOpt = "aiorch",
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """Show the lab's hosts; `hub_address` is where lab hosts reach a hub on this machine."""
    info = Lab(name).status()
    if output is Output.json:
        typer.echo(json.dumps(info, indent=2))
        return
    if not info["up"]:
        typer.echo(f"lab {name} is not up")
        return
    typer.echo(
        f"lab {name}: network {info['network']} {info['subnet']}, hub address {info['hub_address']}"
    )
    typer.echo(f"inventory {info['inventory']}")
    for host in info["hosts"]:
        flags = " CUT" if host["cut"] else ""
        typer.echo(
            f"  {host['name']:<10} {host['address']:<15} {host['site']:<6} {host['role']:<11} "
            f"{host['region']:<3} {host['state']}{flags}"
        )


def _fault(action: str) -> Callable[[list[str], str], None]:
    def command(hosts: HostsArg, name: NameOpt = "aiorch") -> None:
        getattr(Lab(name).faults, action)(*hosts)
        typer.echo(f"{action}: {' '.join(hosts)}")

    return command


for _action, _help in {
    "cut": "Cut hosts off from this machine (the hub); SSH from here still works.",
    "heal": "Undo a cut.",
    "hide": "Make hosts unreachable from this machine (behind a bastion); lab hosts reach them.",
    "unhide": "Undo a hide.",
    "pause": "Freeze hosts (podman pause).",
    "resume": "Unfreeze paused hosts.",
    "restart": "Reboot hosts and wait until sshd answers again.",
}.items():
    fault_app.command(_action, help=_help)(_fault(_action))


@fault_app.command("kill")
def kill(
    host: Annotated[str, typer.Argument(help="Host name, e.g. edge1-1.")],
    process: Annotated[str, typer.Argument(help="Exact process name, e.g. sshd.")],
    name: NameOpt = "aiorch",
) -> None:
    """kill -9 every process named PROCESS on HOST."""
    Lab(name).faults.kill(host, process)
    typer.echo(f"killed {process} on {host}")


@payload_app.command("build")
def payload_build(
    version: Annotated[
        str, typer.Option("--version", help="v1, or v2-broken (fails its health check).")
    ] = "v1",
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """Build (once per recipe) the model-serving image archive; prints its path and digest."""
    path = build_payload(version)
    info = {
        "version": version,
        "ref": payload_ref(version),
        "path": str(path),
        "digest": payload_digest(path),
        "size": path.stat().st_size,
    }
    if output is Output.json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['path']}\n{info['digest']}")
