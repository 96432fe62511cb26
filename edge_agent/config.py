"""The agent's config file (default /etc/aiorch/agent.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path("/etc/aiorch/agent.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/aiorch-agent")


class ConfigError(Exception):
    """A config problem, described in one line."""


@dataclass
class AgentConfig:
    hub_url: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    gpu_backend: str = "nvml"
    request_timeout_s: float = 10.0
    max_backoff_s: float = 300.0
    telemetry_batch_size: int = 500

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
            if key == "state_dir":
                values[key] = Path(value)
            elif key in ("request_timeout_s", "max_backoff_s"):
                values[key] = _positive(origin, key, value, float)
            elif key == "telemetry_batch_size":
                values[key] = int(_positive(origin, key, value, int))
            else:
                values[key] = None if value is None else str(value)
        return cls(**values)


def _positive(origin: str, key: str, value: Any, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {key} must be a number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{origin}: {key} must be positive, got {value!r}")
    return number
