"""Options shared by every command (hub URL, token, data dir), set once by the root callback."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from aiorch.cli.client import HubClient, default_data_dir


@dataclass
class CliState:
    hub: str | None = None
    token: str | None = None
    ca: Path | None = None
    data_dir: Path = field(default_factory=default_data_dir)

    def client(self) -> HubClient:
        return HubClient.resolve(self.hub, self.token, self.data_dir, self.ca)


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


OutputOpt = typer.Option("table", "--output", "-o", help="table or json")
