"""Deployment specs in the store: JSON with every secret value sealed (see aiorch.hub.sealing),
read back into a validated spec with the secrets opened."""

from __future__ import annotations

import json

import sqlite_utils

from aiorch.deploy import DeploymentSpec, parse_spec
from aiorch.deploy.spec import spec_document
from aiorch.deploy.yaml_source import load_mapping
from aiorch.hub.context import HubContext


def to_store(ctx: HubContext, spec: DeploymentSpec) -> str:
    document = spec_document(spec)
    document["spec"]["secretEnv"] = ctx.sealer.seal_all(document["spec"]["secretEnv"])
    return json.dumps(document, sort_keys=True)


def from_store(ctx: HubContext, text: str) -> DeploymentSpec:
    document = load_mapping(text)  # JSON, or the YAML of a deployment stored before sealing
    body = document.get("spec")
    if isinstance(body, dict) and isinstance(body.get("secretEnv"), dict):
        body["secretEnv"] = ctx.sealer.unseal_all(body["secretEnv"])
    return parse_spec(document)


def current(ctx: HubContext, db: sqlite_utils.Database, deployment: str) -> DeploymentSpec:
    """The deployment's spec as last applied (or restored by a rollback)."""
    row = db.execute("SELECT spec FROM deployments WHERE name = ?", [deployment]).fetchone()
    return from_store(ctx, row[0])


def revision(
    ctx: HubContext, db: sqlite_utils.Database, deployment: str, number: int
) -> DeploymentSpec:
    """The spec a revision's replicas were made from."""
    row = db.execute(
        "SELECT spec FROM deployment_revisions WHERE deployment = ? AND revision = ?",
        [deployment, number],
    ).fetchone()
    return from_store(ctx, row[0])
