"""The fleet as the hub sees it: inventory, hosts, agents, sites and status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from aiorch.cli.output import Output, console, emit
from aiorch.cli.runs import follow, report
from aiorch.cli.state import OutputOpt, state
from aiorch.errors import UserError

inventory_app = typer.Typer(help="Ansible inventories in and out of the hub.", no_args_is_help=True)
hosts_app = typer.Typer(help="Hosts known to the hub.", no_args_is_help=True)
agents_app = typer.Typer(help="Edge agents and their liveness.", no_args_is_help=True)


@inventory_app.command("import")
def inventory_import(ctx: typer.Context, file: Path, output: Output = OutputOpt) -> None:
    """Import an Ansible inventory (YAML or INI); all of it or, on any error, nothing."""
    try:
        content = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {file}: {exc}") from None
    result = (
        state(ctx).client().post("/inventory/import", {"filename": file.name, "content": content})
    )
    emit(result, output)


@inventory_app.command("export")
def inventory_export(
    ctx: typer.Context,
    out: Path = typer.Option(None, "--out", "-f", help="Write here instead of stdout."),
) -> None:
    """Write the hub's hosts as a YAML inventory for ansible-playbook."""
    text = state(ctx).client().text("/inventory/export")
    if out is None:
        print(text, end="")
    else:
        out.write_text(text)
        print(f"wrote {out}")


@hosts_app.command("list")
def hosts_list(
    ctx: typer.Context,
    site: str = typer.Option(None, help="Only hosts of this site."),
    output: Output = OutputOpt,
) -> None:
    """List hosts with site, role, labels, GPUs and agent status."""
    rows = state(ctx).client().get("/hosts", site=site)
    if output is Output.table:
        for row in rows:
            row["gpus"] = f"{row['gpus']} simulated" if row.get("gpus_simulated") else row["gpus"]
    emit(rows, output, ["name", "site", "role", "region", "gpus", "agent", "status", "labels"])


@hosts_app.command("show")
def hosts_show(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show one host with its vars, facts and GPU acceptance record."""
    host = state(ctx).client().get(f"/hosts/{name}")
    if output is Output.table and isinstance(host, dict) and "gpu_acceptance" in host:
        host["gpu_acceptance"] = acceptance_line(host["gpu_acceptance"])
    emit(host, output)


def acceptance_line(record: dict[str, Any] | None) -> str:
    """`accepted (nvml, 8 GPUs) at 2026-01-01 10:00:00`, or what failed; "no record" says
    the host takes GPU work without the gate."""
    if not record:
        return "no record (not gated: takes GPU work)"
    backend = str(record.get("backend"))
    if record.get("simulated") and not backend.startswith("simulated"):
        backend += ", simulated"
    gpus = record.get("gpus")
    what = f"{backend}, {gpus} GPUs" if gpus is not None else backend
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("recorded_at") or 0))
    if record.get("accepted"):
        return f"accepted ({what}) at {when}"
    failures = "; ".join(record.get("failures") or []) or "no failure named"
    return f"NOT accepted ({what}) at {when}: {failures}"


@hosts_app.command("retire")
def hosts_retire(
    ctx: typer.Context,
    name: str,
    wipe: bool = typer.Option(False, "--wipe", help="Also wipe the data devices (see --confirm)."),
    confirm: str = typer.Option(None, "--confirm", help="yes-wipe-data, to really wipe."),
    force: bool = typer.Option(
        False, "--force", help="Retire even if the decommission playbook fails (a dead box)."
    ),
    output: Output = OutputOpt,
) -> None:
    """Decommission a host (playbook run), revoke its agent's credential, mark it retired."""
    if wipe and confirm != "yes-wipe-data":
        raise UserError("--wipe destroys data: add --confirm yes-wipe-data to mean it")
    client = state(ctx).client()
    body = {"wipe": wipe, "confirm": confirm, "force": force}
    run = client.post(f"/hosts/{name}/retire", body)
    report(follow(client, run, live=output is Output.table), output)


@agents_app.command("list")
def agents_list(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List agents; status is online or offline from their last check-in."""
    rows = state(ctx).client().get("/agents")
    columns = ["id", "host_name", "site", "status", "last_seen", "agent_version"]
    emit(rows, output, [*columns, "applied_revision", "desired_revision"])


@agents_app.command("revoke")
def agents_revoke(ctx: typer.Context, agent_id: str, output: Output = OutputOpt) -> None:
    """Revoke an agent and its certificates: the hub refuses its very next request."""
    emit(state(ctx).client().post(f"/agents/{agent_id}/revoke", {}), output)


@agents_app.command("rekey")
def agents_rekey(ctx: typer.Context, agent_id: str, output: Output = OutputOpt) -> None:
    """Have an agent renew its certificate with a fresh key at its next check-in."""
    emit(state(ctx).client().post(f"/agents/{agent_id}/rekey", {}), output)


def sites_cmd(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List sites with their region and host count."""
    emit(state(ctx).client().get("/sites"), output, ["name", "region", "hosts"])


def status_cmd(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """One-screen fleet overview: hosts, GPUs and agents per site, drift, deployments."""
    data = state(ctx).client().get("/status")
    if output is Output.json:
        emit(data, output)
        return
    agents = ", ".join(f"{n} {s}" for s, n in sorted(data["agents"].items())) or "none"
    console.print(
        f"[bold]aiorch hub {data['hub_version']}[/]  hosts {data['hosts']}  "
        f"GPUs {data['gpus']} (+{data['gpus_simulated']} simulated)  agents: {agents}"
    )
    columns = ["site", "hosts", "gpus", "gpus_simulated", "agents_online", "agents_offline"]
    for site in data["sites"]:  # a release per host count, and short model digests
        releases = site.get("releases") or {}
        site["releases"] = ", ".join(f"{v} ({n})" for v, n in releases.items())
        site["models"] = " ".join(d.removeprefix("sha256:")[:12] for d in site.get("models", []))
    emit(data["sites"], output, [*columns, "agents_none", "releases", "models"], title="sites")
    if bundle := data.get("bundle"):
        console.print(
            f"content bundle {bundle['name']} version {bundle['version']} {bundle['digest'][:19]}"
            f"  imported {bundle['age_s'] / 86400:.1f} days ago  expires {bundle['expires']}"
        )
    if data.get("drift"):
        columns = ["host", "state", "detected_at", "run_id", "changed_tasks", "reason"]
        emit(data["drift"], output, columns, "drift")
    if data.get("deployments"):
        columns = ["deployment", "project", "replicas", "healthy", "starting", "pending"]
        emit(data["deployments"], output, [*columns, "not_healthy", "rollout"], "deployments")
