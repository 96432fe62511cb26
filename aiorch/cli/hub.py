"""`aiorch hub`: run the hub."""

from __future__ import annotations

from pathlib import Path

import typer

from aiorch.cli.state import state
from aiorch.errors import UserError
from aiorch.hub.settings import HubSettings

app = typer.Typer(help="Run the hub (API, store, background jobs).", no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    data_dir: Path = typer.Option(None, help="Where the database and admin token live."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8700, min=1, max=65535),
    listen: list[str] = typer.Option(
        [], help="Extra ADDRESS:PORT to listen on too (e.g. a lab network's gateway)."
    ),
    poll_interval: float = typer.Option(
        None,
        min=0.1,
        help="Seconds between agent check-ins [default: AIORCH_POLL_INTERVAL_S or 30].",
    ),
    log_level: str = typer.Option("info"),
    log_format: str = typer.Option(
        "text", help="text, or json: one JSON object a line, each with its request's id."
    ),
    repo_dir: Path = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="A site repository from `aiorch repo build`, served read-only at /repo.",
    ),
    max_connections: int = typer.Option(
        0,
        min=0,
        help="Open connections at most; past it the longest-idle one is closed "
        "(0: what the open-files limit allows).",
    ),
    header_timeout: float = typer.Option(
        10.0, min=0.1, max=3600, help="Seconds a connection has to send a request's headers."
    ),
    body_timeout: float = typer.Option(
        30.0, min=0.1, max=3600, help="Longest silence, in seconds, within a request body."
    ),
    handshake_timeout: float = typer.Option(
        60.0, min=0.1, max=3600, help="Seconds a connection has to finish its TLS handshake."
    ),
    tls_cert: Path = typer.Option(
        None, exists=True, dir_okay=False, help="Serve this certificate instead of the hub CA's."
    ),
    tls_key: Path = typer.Option(None, exists=True, dir_okay=False, help="Its key (mode 0600)."),
    tls_ca: Path = typer.Option(
        None, exists=True, dir_okay=False, help="The CA that issued --tls-cert (clients trust it)."
    ),
    tls_name: list[str] = typer.Option(
        [], help="Another DNS name the hub's certificate covers (the listen addresses always are)."
    ),
    boot_listen: str = typer.Option(
        None,
        help="ADDRESS:PORT for machines' network boot: plain HTTP with only the boot scripts and"
        " the ramdisk (AIORCH_METAL_HUB_URL and AIORCH_METAL_RAMDISK_DIR say which).",
    ),
    boot_dhcp: str = typer.Option(
        None,
        help="INTERFACE=SUBNET: run dnsmasq there in proxy-DHCP mode (beside the site's DHCP),"
        " pointing network-booting machines at --boot-listen.",
    ),
) -> None:
    """Serve the hub API over HTTPS; on first start create DATA_DIR, the database, the hub CA
    (DATA_DIR/ca.pem, its key in DATA_DIR/ca.key) and DATA_DIR/admin.token."""
    # Only this command loads the server: every other CLI call talks to a hub over HTTP.
    from aiorch.hub.connections import ConnectionLimits, default_max_connections
    from aiorch.hub.server import parse_listen, serve

    directory = data_dir or state(ctx).data_dir
    settings = HubSettings(data_dir=directory.resolve())
    if poll_interval is not None:  # an option given wins over AIORCH_POLL_INTERVAL_S
        settings = settings.model_copy(update={"poll_interval_s": poll_interval})
    tls = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca}
    given: dict[str, object] = {n: path.resolve() for n, path in tls.items() if path is not None}
    if tls_name:
        given["tls_names"] = [*settings.tls_names, *tls_name]
    if given:  # validated again as a whole: cert, key and CA go together
        settings = HubSettings(**{**settings.model_dump(), **given})
    addresses = [(host, port), *(parse_listen(v) for v in listen)]
    limits = ConnectionLimits(
        max_connections=max_connections or default_max_connections(),
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        handshake_timeout_s=handshake_timeout,
    )
    if log_format not in ("text", "json"):
        raise UserError(f"--log-format wants text or json, got {log_format!r}")
    serve(
        settings,
        addresses,
        log_level=log_level,
        log_format=log_format,
        repo_dir=repo_dir,
        limits=limits,
        boot_address=parse_listen(boot_listen, "--boot-listen") if boot_listen else None,
        boot_dhcp=_interface_subnet(boot_dhcp) if boot_dhcp else None,
    )


def _interface_subnet(value: str) -> tuple[str, str]:
    interface, sep, subnet = value.partition("=")
    if not sep or not interface or not subnet:
        raise UserError(
            f"--boot-dhcp wants INTERFACE=SUBNET (e.g. br-prov=10.0.0.0/24), got {value!r}"
        )
    return interface, subnet
