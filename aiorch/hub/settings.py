"""Hub settings: the few knobs an operator tunes, with safe defaults."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from aiorch.errors import UserError

# aiorch's own playbooks as installed: the package aiorch.playbooks, which is the checkout's
# playbooks/ under an editable install and a copy in site-packages under a wheel (setup.py).
# AIORCH_PLAYBOOKS_DIR points elsewhere.
REPO_PLAYBOOKS = Path(str(resources.files("aiorch.playbooks")))


def _problem(error: ErrorDetails) -> str:
    name = f"AIORCH_{str(error['loc'][0]).upper()}" if error["loc"] else "settings"
    got = "" if error["type"] == "missing" else f" (got {error['input']!r})"
    return f"{name}: {error['msg']}{got}"


class HubSettings(BaseSettings):
    """Every field reads `AIORCH_<NAME>` from the environment (an empty value counts as
    unset); arguments given in code win over the environment."""

    model_config = SettingsConfigDict(env_prefix="AIORCH_", env_ignore_empty=True)

    data_dir: Path
    poll_interval_s: float = Field(30.0, gt=0, description="How often agents check in.")
    offline_after_missed: int = Field(3, ge=1, description="Missed check-ins before offline.")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_image_bytes: int = Field(64 * 1024**3, gt=0, description="Largest image archive upload.")
    max_artifact_bytes: int = Field(
        4 * 1024**3, gt=0, description="Largest job artifact an agent may upload."
    )
    job_interval_s: float = Field(10.0, gt=0, description="Period of the housekeeping jobs.")
    raw_retention_s: float = Field(6 * 3600, gt=0, description="How long raw samples are kept.")
    rollup_retention_s: float = Field(
        14 * 86400, gt=0, description="How long 1-minute rollups are kept."
    )
    downsample_interval_s: float = Field(5.0, gt=0, description="Period of the rollup job.")
    retention_interval_s: float = Field(300.0, gt=0, description="Period of the retention job.")
    run_retention_s: float = Field(
        30 * 86400, gt=0, description="How long finished runs and their events are kept."
    )
    agent_retention_s: float = Field(
        30 * 86400,
        gt=0,
        description="Silence after which an agent's series and streams go (retired: at once),"
        " once its samples and rollups have aged out.",
    )
    latest_stale_s: float = Field(
        3600.0, gt=0, description="Age at which /metrics forgets a series' latest value."
    )
    ui_session_s: float = Field(
        8 * 3600, gt=0, description="How long a dashboard sign-in lasts (never past its token)."
    )
    revisions_kept: int = Field(
        10, ge=1, description="Newest revisions kept per deployment, besides those in use."
    )
    image_gc_grace_s: float = Field(
        7 * 86400, gt=0, description="How long an image nothing names is kept after its push."
    )
    retention_batch_rows: int = Field(
        1000, ge=1, description="Rows one retention write deletes at most."
    )
    retention_max_batches: int = Field(
        20, ge=1, description="Writes one retention job run makes at most; the rest waits."
    )
    heartbeat_flush_s: float = Field(1.0, gt=0, description="How often heartbeats are persisted.")
    store_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite sync of every commit (AIORCH_STORE_SYNCHRONOUS): FULL survives a "
        "power loss; NORMAL is faster and may lose the last commits, never consistency.",
    )
    rollout_interval_s: float = Field(
        1.0, gt=0, description="How often rollouts check their wave's health."
    )
    job_schedule_interval_s: float = Field(
        5.0, gt=0, description="Period of the jobs' scheduling pass."
    )
    job_disconnect_window_s: float = Field(
        1800.0,
        gt=0,
        description="How long a job on a silent host stays running (unconfirmed) before "
        "it is node_lost.",
    )
    autoscale_interval_s: float = Field(
        5.0, gt=0, description="How often autoscaled deployments are sized to their load."
    )
    playbooks_dir: Path = Field(
        REPO_PLAYBOOKS,
        description="Where run playbooks are looked up (AIORCH_PLAYBOOKS_DIR).",
    )
    run_forks: int = Field(20, ge=1, description="Hosts Ansible works on at once.")
    preflight_timeout_s: float = Field(5.0, gt=0, description="SSH pre-flight per host.")
    drift_interval_s: float = Field(
        3600.0,
        ge=0,
        description="Period of the drift check (AIORCH_DRIFT_INTERVAL_S); 0 disables it.",
    )
    drift_playbook: str = Field(
        "site.yml",
        description="Playbook the drift check runs in check mode, per site.",
    )
    audit_checkpoint_rows: int = Field(
        1000, ge=1, description="Audit rows after which a signed checkpoint is due."
    )
    audit_checkpoint_interval_s: float = Field(
        600.0, gt=0, description="Time after which a checkpoint of newer audit rows is due."
    )
    retire_playbook: str = Field("decommission.yml", description="Playbook `hosts retire` runs.")
    agent_cert_lifetime_s: float = Field(
        30 * 86400, ge=3600, description="Life of an agent's client certificate."
    )
    agent_offline_grace_s: float = Field(
        180 * 86400,
        ge=0,
        description="How long past its certificate's expiry an agent may still renew by proving"
        " its key (a site's own `offline_grace_s` wins).",
    )
    tls_cert: Path | None = Field(None, description="The operator's own server certificate.")
    tls_key: Path | None = Field(None, description="Its private key (0600).")
    tls_ca: Path | None = Field(None, description="The CA that issued tls_cert.")
    tls_names: list[str] = Field(
        default_factory=list, description="More names the hub's server certificate covers."
    )
    metal_hub_url: str | None = Field(
        None,
        pattern=r"^https://[^\s/]+$",
        description="The hub as a booting machine's ramdisk reaches it (https://ADDRESS:PORT, an"
        " address the hub's certificate covers). Unset: the boot listener serves no ramdisk.",
    )
    metal_ramdisk_dir: Path | None = Field(
        None, description="The ramdisk the boot listener serves: vmlinuz, then its initrds by name."
    )
    metal_image_dir: Path | None = Field(
        None,
        description="The root images machines are provisioned with: NAME.img.gz and its"
        " manifest NAME.json, as `aiorch repo image` writes them.",
    )
    metal_configure_playbook: str = Field(
        "machine.yml",
        description="The playbook a provisioned machine's first run is, once its agent enrolled"
        " (site.yml, then the GPU gate where the ramdisk saw GPUs): serving when it succeeds.",
    )
    metal_ssh_key: Path | None = Field(
        None,
        description="The private SSH key (OpenSSH, no passphrase) the hub's runs log into"
        " provisioned machines with as root; its public key is seeded onto each.",
    )

    @field_validator("store_synchronous", mode="before")
    @classmethod
    def _sync_mode(cls, value: Any) -> str:
        """`normal` works as well as `NORMAL`; anything else is named."""
        mode = str(value).upper()
        if mode not in ("FULL", "NORMAL"):
            raise ValueError(f"must be FULL or NORMAL, not {mode!r}")
        return mode

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(
        cls, data: Any, handler: ModelWrapValidatorHandler[HubSettings]
    ) -> HubSettings:
        """A bad setting stops `hub serve` and the CLI with one line naming its variable."""
        try:
            return handler(data)
        except ValidationError as exc:
            problems = "; ".join(_problem(error) for error in exc.errors())
            raise UserError(f"bad hub setting: {problems}") from None

    @model_validator(mode="after")
    def _operator_cert_whole(self) -> HubSettings:
        """An operator's certificate comes with its key and with the CA clients verify it by."""
        given = [self.tls_cert, self.tls_key, self.tls_ca]
        if any(given) and not all(given):
            raise ValueError(
                "tls_cert, tls_key and tls_ca go together (--tls-cert/--tls-key/--tls-ca)"
            )
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "aiorch.db"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def runs_dir(self) -> Path:
        """Per-run scratch (inventory, ansible-runner's files); removed when a run ends."""
        return self.data_dir / "runs"

    @property
    def offline_after_s(self) -> float:
        return self.poll_interval_s * self.offline_after_missed
