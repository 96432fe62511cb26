"""The ansible processes of runs: killed, and waited for, before a run's host locks go, and
whatever a previous hub process left behind is cleaned up at start."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import sqlite_utils

from aiorch.hub.context import HubContext
from aiorch.hub.services import audit

log = logging.getLogger("aiorch.hub.runs")
# How long killed ansible processes get to disappear before a run's locks are released.
_LEFTOVER_EXIT_S = 10.0


def ansible_processes(run_dir: Path) -> list[int]:
    """Processes whose command line names the run's folder (a zombie's is empty)."""
    marker = f"{run_dir}{os.sep}"
    return [
        proc.info["pid"]
        for proc in psutil.process_iter(["pid", "cmdline"])
        if proc.info["pid"] != os.getpid()
        and any(marker in arg for arg in proc.info.get("cmdline") or [])
    ]


def kill_leftovers(run_dir: Path) -> list[int]:
    """Kill the processes whose command line names the run's folder (ansible-playbook and its
    workers, with the ssh they started), and wait until they are gone, so nothing still
    changes the hosts once their locks are released."""
    killed = []
    for pid in ansible_processes(run_dir):
        try:
            if os.getpgid(pid) == pid:  # ansible-playbook and its workers lead groups
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
    # SIGKILL is delivered, not yet acted on: wait (bounded) until they are gone.
    deadline = time.monotonic() + _LEFTOVER_EXIT_S
    while killed and ansible_processes(run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def recover_interrupted(ctx: HubContext) -> list[str]:
    """Hub start: runs a previous hub process left queued or running become `interrupted`,
    whatever is left of their ansible-playbook is killed, and their locks are released."""
    db = ctx.store.read()
    stale = list(db.query("SELECT id, hub_pid FROM runs WHERE status IN ('queued', 'running')"))
    for run in stale:
        killed = kill_leftovers(ctx.settings.runs_dir / run["id"])
        if killed:
            log.warning("run %s: killed leftover ansible processes %s", run["id"], killed)
        shutil.rmtree(ctx.settings.runs_dir / run["id"], ignore_errors=True)
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        for run in stale:
            message = f"the hub (pid {run['hub_pid']}) stopped while the run was going on"
            db.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, message = ? WHERE id = ?",
                [now, message, run["id"]],
            )
            audit.record(db, "hub", "run.interrupted", f"run:{run['id']}", ts=now)
        db.execute(
            "DELETE FROM host_locks WHERE run_id NOT IN "
            "(SELECT id FROM runs WHERE status IN ('queued', 'running'))"
        )

    ctx.store.write(op)
    return [run["id"] for run in stale]
