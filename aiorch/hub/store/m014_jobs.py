"""m014: jobs, their attempts and the transitions between states, and GPU-hour budgets.

A job is what the user submitted; an attempt is one run of it on a host (or a cluster), with
its own id that the agent echoes back, so a report about an old attempt never touches a newer
one. `job_events` keeps every transition with its reason. A project's budget is
`quotas.gpu_hours` per `quotas.budget_period`; admission reserves `gpus * maxDuration` in
`jobs.reserved_gpu_s`, and the end of the job settles it into `jobs.used_gpu_s`.
"""

from __future__ import annotations

import sqlite_utils


def m014_jobs(db: sqlite_utils.Database) -> None:
    script = """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            project TEXT NOT NULL,
            spec TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            priority INTEGER NOT NULL,
            preemptible INTEGER NOT NULL,
            gpus INTEGER NOT NULL,
            nodes INTEGER NOT NULL,
            max_duration_s INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            current_attempt TEXT,
            not_before REAL,
            reserved_gpu_s REAL NOT NULL DEFAULT 0,
            used_gpu_s REAL NOT NULL DEFAULT 0,
            exit_code INTEGER,
            submitted_by TEXT NOT NULL,
            submitted_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL
        );
        CREATE INDEX jobs_state ON jobs(state, priority, submitted_at);
        CREATE INDEX jobs_project ON jobs(project, submitted_at);
        CREATE TABLE job_attempts (
            id TEXT PRIMARY KEY,
            job_id INTEGER NOT NULL,
            number INTEGER NOT NULL,
            backend TEXT NOT NULL,
            host TEXT,
            agent_id TEXT,
            external_id TEXT,
            gpus TEXT NOT NULL DEFAULT '[]',
            simulated_gpus INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            stop TEXT,
            reason TEXT,
            seq INTEGER NOT NULL DEFAULT -1,
            exit_code INTEGER,
            started_at REAL,
            finished_at REAL,
            log_tail TEXT NOT NULL DEFAULT '',
            log_bytes INTEGER NOT NULL DEFAULT 0,
            artifacts TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_report_at REAL,
            UNIQUE (job_id, number)
        );
        CREATE INDEX job_attempts_host ON job_attempts(host, state);
        CREATE INDEX job_attempts_agent ON job_attempts(agent_id, state);
        CREATE TABLE job_events (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL,
            attempt TEXT,
            ts REAL NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX job_events_job ON job_events(job_id, id);
        ALTER TABLE quotas ADD COLUMN gpu_hours REAL;
        ALTER TABLE quotas ADD COLUMN budget_period TEXT
        """
    for statement in script.split(";"):  # one by one, inside the migration's transaction
        db.execute(statement)
