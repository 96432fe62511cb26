"""The agent's config file (default /etc/aiorch/agent.yaml)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path("/etc/aiorch/agent.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/aiorch-agent")


class ConfigError(Exception):
    """A config problem, described in one line."""


@dataclass
class AgentConfig:
    """Every key of agent.yaml, with its default.

    Workloads run with podman on the host. `podman_args` go before the podman subcommand in
    every call (e.g. `["--runtime", "/usr/sbin/runc"]` where crun can't handle the cgroup
    layout, or `["--runtime", "/usr/bin/crun", "--cgroup-manager=cgroupfs"]` inside a lab
    host); `podman_run_args` go into every `podman run` of a workload (e.g.
    `["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=8192:8192"]`, or
    `["--cgroups=disabled"]` for nested podman). Both are lists of strings, empty by default.
    """

    hub_url: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    gpu_backend: str = "nvml"
    request_timeout_s: float = 10.0
    max_backoff_s: float = 300.0
    telemetry_batch_size: int = 500
    # The outbox keeps unsent samples within all three bounds, dropping (and counting) the oldest.
    outbox_max_samples: int = 1_000_000
    outbox_max_bytes: int = 128 << 20
    outbox_max_age_s: float = 7 * 86400
    # A backlog drains over several rounds so that it never holds up the next check-in.
    upload_max_batches_per_round: int = 10
    upload_max_seconds_per_round: float = 5.0
    podman_args: list[str] = field(default_factory=list)
    podman_run_args: list[str] = field(default_factory=list)
    # Where model files are cached, shared by every workload (the storage role makes
    # /var/lib/aiorch/models); None: `models/` in the state dir.
    model_cache_dir: Path | None = None

    @property
    def model_cache(self) -> Path:
        return self.model_cache_dir or self.state_dir / "models"

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read `path`; a missing default file means all defaults."""
        if not path.exists():
            if path == DEFAULT_CONFIG:
                return cls()
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of keys to values")
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], origin: str = "config") -> AgentConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{origin}: unknown key {unknown[0]!r}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "state_dir" or (key == "model_cache_dir" and value is not None):
                values[key] = Path(value)
            elif key in _FLOAT_KEYS:
                values[key] = _positive(origin, key, value, float)
            elif key in _INT_KEYS:
                values[key] = _whole(origin, key, value)
            elif key in _LIST_KEYS:
                values[key] = _strings(origin, key, value)
            else:
                values[key] = None if value is None else str(value)
        return cls(**values)


_FLOAT_KEYS = frozenset(
    {"request_timeout_s", "max_backoff_s", "outbox_max_age_s", "upload_max_seconds_per_round"}
)
_INT_KEYS = frozenset(
    {
        "telemetry_batch_size",
        "outbox_max_samples",
        "outbox_max_bytes",
        "upload_max_batches_per_round",
    }
)

_LIST_KEYS = frozenset({"podman_args", "podman_run_args"})


def _positive(origin: str, key: str, value: Any, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{origin}: {key} must be positive, got {value!r}")
    return number


def _whole(origin: str, key: str, value: Any) -> int:
    """A count or a size: 1e6 is fine, 2.5 and `true` are mistakes."""
    number = _positive(origin, key, value, float)
    if isinstance(value, bool) or number != int(number):
        raise ConfigError(f"{origin}: {key} must be a whole number, got {value!r}")
    return int(number)


def _strings(origin: str, key: str, value: Any) -> list[str]:
    """Command-line arguments: a list of strings, since a number or a nested list would reach
    podman as something nobody wrote."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{origin}: {key} must be a list of non-empty strings, got {value!r}")
    return list(value)
