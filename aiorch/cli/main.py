"""The `aiorch` command: one Typer app assembled from the command modules."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from aiorch.bundle.cli import bundle_app
from aiorch.cli import (
    audit,
    bundles,
    deploy,
    fleet,
    hub,
    jobs,
    machines,
    models,
    playbooks,
    projects,
    runs,
    telemetry,
    tokens,
    trust,
)
from aiorch.cli.client import default_data_dir
from aiorch.cli.state import CliState
from aiorch.errors import AiorchError
from aiorch.lab.cli import app as lab_app
from aiorch.repo.cli import app as repo_app

app = typer.Typer(
    help="aiorch: bring up, run and watch on-prem GPU servers and edge boxes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    hub_url: str = typer.Option(None, "--hub", envvar="AIORCH_HUB", help="Hub URL."),
    token: str = typer.Option(None, "--token", envvar="AIORCH_TOKEN", help="API token."),
    ca: Path = typer.Option(
        None, "--ca", envvar="AIORCH_CA", help="CA bundle to verify the hub by [DATA_DIR/ca.pem]."
    ),
    data_dir: Path = typer.Option(
        None, envvar="AIORCH_DATA_DIR", help="Local hub data dir (default hub and admin token)."
    ),
) -> None:
    ctx.obj = CliState(hub=hub_url, token=token, ca=ca, data_dir=data_dir or default_data_dir())


app.add_typer(hub.app, name="hub")
app.add_typer(tokens.token_app, name="tokens")
app.add_typer(tokens.token_app, name="token", hidden=True)  # the older name
app.add_typer(projects.projects_app, name="projects")
app.add_typer(tokens.enroll_app, name="enroll-token")
app.add_typer(fleet.inventory_app, name="inventory")
app.add_typer(fleet.hosts_app, name="hosts")
app.add_typer(fleet.agents_app, name="agents")
app.add_typer(trust.ca_app, name="ca")
app.add_typer(telemetry.app, name="telemetry")
app.add_typer(runs.runs_app, name="runs")
app.add_typer(playbooks.playbooks_app, name="playbooks")
app.add_typer(deploy.deployments_app, name="deployments")
app.add_typer(deploy.image_app, name="image")
app.add_typer(models.model_app, name="model")
app.add_typer(deploy.quota_app, name="quota")
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(machines.machines_app, name="machines")
app.add_typer(deploy.rollout_app, name="rollout")
app.add_typer(repo_app, name="repo")
app.add_typer(bundle_app, name="bundle")
bundles.attach(bundle_app)  # import, list, trust: the hub's side
app.add_typer(lab_app, name="lab")
app.add_typer(audit.app, name="audit")
app.command("sites")(fleet.sites_cmd)
app.command("status")(fleet.status_cmd)
app.command("provision")(runs.provision_cmd)
app.command("plan")(deploy.plan_cmd)
app.command("apply")(deploy.apply_cmd)
app.command("delete")(deploy.delete_cmd)


def run() -> None:
    """Console-script entry: domain errors become one line on stderr and exit status 1."""
    try:
        app()
    except (AiorchError, TimeoutError) as exc:
        print(f"aiorch: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
