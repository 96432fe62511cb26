"""Versioned schema migrations, each a small function applied once, in order; from m005 on,
each in its own module. A migration is frozen once released: it imports no domain code (a
later release may change or tighten it, and an old database must still migrate)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils
import yaml

from aiorch.hub.store.m005_drift_state import m005_drift_state
from aiorch.hub.store.m006_retention_indexes import m006_retention_indexes
from aiorch.hub.store.m007_trust import m007_trust
from aiorch.hub.store.m008_audit_chain import m008_audit_chain
from aiorch.hub.store.m009_projects import m009_projects
from aiorch.hub.store.m010_bundles import m010_bundles
from aiorch.hub.store.m011_playbook_sets import m011_playbook_sets
from aiorch.hub.store.m012_models import m012_models
from aiorch.hub.store.m013_ui_sessions import m013_ui_sessions
from aiorch.hub.store.m014_jobs import m014_jobs
from aiorch.hub.store.m015_autoscale import m015_autoscale
from aiorch.hub.store.m016_machines import m016_machines
from aiorch.hub.store.m017_gpu_acceptance import m017_gpu_acceptance
from aiorch.hub.store.m018_power_requests import m018_power_requests

Migration = Callable[[sqlite_utils.Database], None]


def _run(db: sqlite_utils.Database, script: str) -> None:
    """Run several statements inside the caller's transaction (executescript would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_core(db: sqlite_utils.Database) -> None:
    _run(
        db,
        """
        CREATE TABLE sites (
            name TEXT PRIMARY KEY,
            region TEXT,
            labels TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        );
        CREATE TABLE hosts (
            name TEXT PRIMARY KEY,
            site TEXT,
            role TEXT,
            region TEXT,
            labels TEXT NOT NULL DEFAULT '{}',
            vars TEXT NOT NULL DEFAULT '{}',
            groups TEXT NOT NULL DEFAULT '[]',
            facts TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'active',
            agent_id TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX hosts_site ON hosts(site);
        CREATE TABLE inventory_groups (
            name TEXT PRIMARY KEY,
            vars TEXT NOT NULL DEFAULT '{}',
            children TEXT NOT NULL DEFAULT '[]'
        );
        CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
            name TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE TABLE enrollment_tokens (
            id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            site TEXT NOT NULL,
            expires_at REAL NOT NULL,
            max_uses INTEGER NOT NULL,
            uses INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'active',
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            host_name TEXT NOT NULL,
            site TEXT NOT NULL,
            enrolled_at REAL NOT NULL,
            enrollment_token_id TEXT,
            status TEXT NOT NULL DEFAULT 'online',
            last_seen REAL,
            agent_version TEXT,
            uptime_s REAL,
            facts_hash TEXT,
            applied_revision INTEGER NOT NULL DEFAULT 0,
            revoked_at REAL
        );
        CREATE INDEX agents_host ON agents(host_name);
        CREATE TABLE desired_states (
            agent_id TEXT PRIMARY KEY REFERENCES agents(id),
            revision INTEGER NOT NULL,
            document TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE streams (
            id INTEGER PRIMARY KEY,
            agent_id TEXT NOT NULL,
            epoch TEXT NOT NULL,
            dropped INTEGER NOT NULL DEFAULT 0,
            UNIQUE (agent_id, epoch)
        );
        CREATE TABLE telemetry_batches (
            stream_id INTEGER NOT NULL,
            seq_start INTEGER NOT NULL,
            seq_end INTEGER NOT NULL,
            ts_min REAL NOT NULL,
            ts_max REAL NOT NULL,
            samples INTEGER NOT NULL,
            received_at REAL NOT NULL,
            rolled INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (stream_id, seq_start)
        );
        CREATE INDEX batches_received ON telemetry_batches(received_at);
        CREATE INDEX batches_unrolled ON telemetry_batches(rolled) WHERE rolled = 0;
        CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            agent_id TEXT NOT NULL,
            metric TEXT NOT NULL,
            labels TEXT NOT NULL,
            UNIQUE (agent_id, metric, labels)
        );
        CREATE TABLE samples (
            stream_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            series_id INTEGER NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (stream_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE rollups_1m (
            series_id INTEGER NOT NULL,
            minute INTEGER NOT NULL,
            count INTEGER NOT NULL,
            sum REAL NOT NULL,
            min REAL NOT NULL,
            max REAL NOT NULL,
            PRIMARY KEY (series_id, minute)
        ) WITHOUT ROWID;
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_ts ON audit_log(ts);
        """,
    )


def m002_runs(db: sqlite_utils.Database) -> None:
    """Playbook runs, their events, the per-host run locks and detected drift."""
    _run(
        db,
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL DEFAULT 'provision',
            playbook TEXT NOT NULL,
            "limit" TEXT,
            hosts TEXT NOT NULL DEFAULT '[]',
            "check" INTEGER NOT NULL DEFAULT 0,
            diff INTEGER NOT NULL DEFAULT 0,
            serial INTEGER,
            max_fail_ratio REAL NOT NULL DEFAULT 0,
            extravars TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN
                ('queued', 'running', 'successful', 'failed', 'interrupted', 'canceled')),
            actor TEXT NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            recap TEXT NOT NULL DEFAULT '{}',
            preflight TEXT NOT NULL DEFAULT '{}',
            message TEXT,
            hub_pid INTEGER
        );
        CREATE INDEX runs_created ON runs(created_at);
        CREATE INDEX runs_status ON runs(status);
        CREATE TABLE run_events (
            run_id TEXT NOT NULL REFERENCES runs(id),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            host TEXT,
            task TEXT,
            action TEXT,
            status TEXT NOT NULL CHECK (status IN
                ('ok', 'changed', 'failed', 'unreachable', 'skipped')),
            changed INTEGER NOT NULL DEFAULT 0,
            duration REAL,
            res TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE host_locks (
            host TEXT PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            acquired_at REAL NOT NULL
        );
        CREATE TABLE drift (
            host TEXT PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            detected_at REAL NOT NULL,
            changed_tasks TEXT NOT NULL DEFAULT '[]'
        );
        """,
    )


def m003_deployments(db: sqlite_utils.Database) -> None:
    _run(
        db,
        """
        ALTER TABLE agents ADD COLUMN report TEXT;
        CREATE TABLE images (
            ref TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX images_digest ON images(digest);
        CREATE TABLE deployments (
            name TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            spec TEXT NOT NULL,
            spec_hash TEXT NOT NULL,
            generation INTEGER NOT NULL,
            updated_by TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE deployment_replicas (
            deployment TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            host TEXT NOT NULL,
            gpus TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (deployment, ordinal)
        );
        CREATE INDEX replicas_host ON deployment_replicas(host);
        CREATE TABLE quotas (
            project TEXT PRIMARY KEY,
            max_gpus INTEGER,
            max_replicas INTEGER
        );
        """,
    )


def _m004_text(value: Any) -> Any:
    """As the spec of m004's time read env values and arguments: YAML scalars as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def _m004_template_hash(stored: str) -> str:
    """Frozen copy of `template_hash(load_spec(stored))` as it was when m004 shipped: the
    SHA-256 of a stored (valid, YAML or JSON) spec's workload fields, defaults filled in."""
    body = yaml.safe_load(stored)["spec"]
    resources, health = body.get("resources") or {}, body.get("healthCheck")
    workload = {
        "image": body["image"],
        "command": [_m004_text(v) for v in body.get("command") or []],
        "args": [_m004_text(v) for v in body.get("args") or []],
        "env": {k: _m004_text(v) for k, v in (body.get("env") or {}).items()},
        "secretEnv": {k: _m004_text(v) for k, v in (body.get("secretEnv") or {}).items()},
        "ports": [
            {"containerPort": p["containerPort"], "hostPort": p.get("hostPort"),
             "protocol": p.get("protocol", "TCP")}
            for p in body.get("ports") or []
        ],
        "volumes": [
            {"hostPath": v["hostPath"], "mountPath": v["mountPath"],
             "readOnly": v.get("readOnly", False)}
            for v in body.get("volumes") or []
        ],
        "resources": {
            "gpus": resources.get("gpus", 0),
            "gpuProduct": resources.get("gpuProduct"),
            "minGpuMemoryMiB": resources.get("minGpuMemoryMiB"),
            "cpu": float(resources.get("cpu", 0.0)),
            "memoryMiB": resources.get("memoryMiB", 0),
        },
        "healthCheck": None
        if health is None
        else {
            "httpGet": {"path": health["httpGet"]["path"], "port": health["httpGet"]["port"]},
            "initialDelaySeconds": health.get("initialDelaySeconds", 0),
            "periodSeconds": health.get("periodSeconds", 10),
            "timeoutSeconds": health.get("timeoutSeconds", 1),
            "failureThreshold": health.get("failureThreshold", 3),
        },
    }  # fmt: skip
    text = json.dumps(workload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def m004_rollouts(db: sqlite_utils.Database) -> None:
    """Revisions (one per template a deployment has run) and the rollouts between them; each
    replica runs one revision, and `stable_revision` is the last one fully rolled out."""
    _run(
        db,
        """
        ALTER TABLE deployments ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE deployments ADD COLUMN stable_revision INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE deployment_replicas ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
        CREATE TABLE deployment_revisions (
            deployment TEXT NOT NULL,
            revision INTEGER NOT NULL,
            template_hash TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (deployment, revision)
        );
        CREATE TABLE rollouts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment TEXT NOT NULL,
            from_revision INTEGER NOT NULL,
            to_revision INTEGER NOT NULL,
            strategy TEXT NOT NULL,
            waves TEXT NOT NULL,
            wave INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            reason TEXT,
            wave_started_at REAL NOT NULL,
            healthy_since REAL,
            started_by TEXT NOT NULL,
            started_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX rollouts_deployment ON rollouts(deployment, id);
        CREATE INDEX rollouts_state ON rollouts(state)
        """,
    )
    for name, spec, by, at in db.execute(
        "SELECT name, spec, updated_by, updated_at FROM deployments"
    ).fetchall():
        db.execute(
            "INSERT INTO deployment_revisions VALUES (?, 1, ?, ?, ?, ?)",
            [name, _m004_template_hash(spec), spec, by, at],
        )


MIGRATIONS: list[Migration] = [
    m001_core,
    m002_runs,
    m003_deployments,
    m004_rollouts,
    m005_drift_state,
    m006_retention_indexes,
    m007_trust,
    m008_audit_chain,
    m009_projects,
    m010_bundles,
    m011_playbook_sets,
    m012_models,
    m013_ui_sessions,
    m014_jobs,
    m015_autoscale,
    m016_machines,
    m017_gpu_acceptance,
    m018_power_requests,
]


def apply_migrations(db: sqlite_utils.Database) -> list[str]:
    """Apply the migrations not yet recorded in `_migrations`; returns their names."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row["name"] for row in db.query("SELECT name FROM _migrations")}
    applied = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        with db.atomic():
            migration(db)
            db.table("_migrations").insert({"name": migration.__name__, "applied_at": time.time()})
        applied.append(migration.__name__)
    return applied
