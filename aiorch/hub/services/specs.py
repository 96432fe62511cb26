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
    body, meta = document["spec"], document["metadata"]
    body["secretEnv"] = ctx.sealer.seal_env(body["secretEnv"], meta["project"], meta["name"])
    return json.dumps(document, sort_keys=True)


def from_store(ctx: HubContext, text: str) -> DeploymentSpec:
    document = load_mapping(text)  # JSON, or the YAML of a deployment stored before sealing
    body, meta = document.get("spec"), document.get("metadata")
    if isinstance(body, dict) and isinstance(body.get("secretEnv"), dict):
        meta = meta if isinstance(meta, dict) else {}
        project, name = str(meta.get("project")), str(meta.get("name"))
        body["secretEnv"] = ctx.sealer.unseal_env(body["secretEnv"], project, name)
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
