"""Hub settings: the few knobs an operator tunes, with safe defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from aiorch.errors import UserError

# The repository's playbooks/ (an editable install); AIORCH_PLAYBOOKS_DIR points elsewhere.
REPO_PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _synchronous() -> Literal["FULL", "NORMAL"]:
    value = _env("AIORCH_STORE_SYNCHRONOUS", "FULL").upper()
    if value not in ("FULL", "NORMAL"):
        raise UserError(f"AIORCH_STORE_SYNCHRONOUS must be FULL or NORMAL, not {value!r}")
    return "NORMAL" if value == "NORMAL" else "FULL"


class HubSettings(BaseModel):
    data_dir: Path
    poll_interval_s: float = Field(30.0, gt=0, description="How often agents check in.")
    offline_after_missed: int = Field(3, ge=1, description="Missed check-ins before offline.")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_image_bytes: int = Field(64 * 1024**3, gt=0, description="Largest image archive upload.")
    job_interval_s: float = Field(10.0, gt=0, description="Period of the housekeeping jobs.")
    raw_retention_s: float = Field(6 * 3600, gt=0, description="How long raw samples are kept.")
    rollup_retention_s: float = Field(
        14 * 86400, gt=0, description="How long 1-minute rollups are kept."
    )
    downsample_interval_s: float = Field(5.0, gt=0, description="Period of the rollup job.")
    retention_interval_s: float = Field(300.0, gt=0, description="Period of the retention job.")
    heartbeat_flush_s: float = Field(1.0, gt=0, description="How often heartbeats are persisted.")
    store_synchronous: Literal["FULL", "NORMAL"] = Field(
        default_factory=_synchronous,
        description="SQLite sync of every commit (AIORCH_STORE_SYNCHRONOUS): FULL survives a "
        "power loss; NORMAL is faster and may lose the last commits, never consistency.",
    )
    rollout_interval_s: float = Field(
        1.0, gt=0, description="How often rollouts check their wave's health."
    )
    playbooks_dir: Path = Field(
        default_factory=lambda: Path(_env("AIORCH_PLAYBOOKS_DIR", str(REPO_PLAYBOOKS))),
        description="Where run playbooks are looked up (AIORCH_PLAYBOOKS_DIR).",
    )
    run_forks: int = Field(20, ge=1, description="Hosts Ansible works on at once.")
    preflight_timeout_s: float = Field(5.0, gt=0, description="SSH pre-flight per host.")
    drift_interval_s: float = Field(
        default_factory=lambda: float(_env("AIORCH_DRIFT_INTERVAL_S", "3600")),
        ge=0,
        description="Period of the drift check (AIORCH_DRIFT_INTERVAL_S); 0 disables it.",
    )
    drift_playbook: str = Field(
        default_factory=lambda: _env("AIORCH_DRIFT_PLAYBOOK", "site.yml"),
        description="Playbook the drift check runs in check mode, per site.",
    )
    retire_playbook: str = Field("decommission.yml", description="Playbook `hosts retire` runs.")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "aiorch.db"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def endpoint_path(self) -> Path:
        """Where `hub serve` records its URL so the CLI finds the local hub."""
        return self.data_dir / "hub.json"

    @property
    def runs_dir(self) -> Path:
        """Per-run scratch (inventory, ansible-runner's files); removed when a run ends."""
        return self.data_dir / "runs"

    @property
    def offline_after_s(self) -> float:
        return self.poll_interval_s * self.offline_after_missed
