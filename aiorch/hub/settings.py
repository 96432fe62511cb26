"""Hub settings: the few knobs an operator tunes, with safe defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class HubSettings(BaseModel):
    data_dir: Path
    poll_interval_s: float = Field(30.0, gt=0, description="How often agents check in.")
    offline_after_missed: int = Field(3, ge=1, description="Missed check-ins before offline.")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    job_interval_s: float = Field(10.0, gt=0, description="Period of the housekeeping jobs.")
    raw_retention_s: float = Field(6 * 3600, gt=0, description="How long raw samples are kept.")
    rollup_retention_s: float = Field(
        14 * 86400, gt=0, description="How long 1-minute rollups are kept."
    )
    downsample_interval_s: float = Field(5.0, gt=0, description="Period of the rollup job.")
    retention_interval_s: float = Field(300.0, gt=0, description="Period of the retention job.")
    heartbeat_flush_s: float = Field(1.0, gt=0, description="How often heartbeats are persisted.")

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
    def offline_after_s(self) -> float:
        return self.poll_interval_s * self.offline_after_missed
