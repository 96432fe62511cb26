"""`aiorch lab` commands (placeholder until the lab lands)."""

import typer

app = typer.Typer(help="A local fleet of real systemd+sshd hosts on an air-gapped network.")
