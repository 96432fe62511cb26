"""Bounded growth: each retention job removes what has aged out and keeps what is live."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.hub.settings import HubSettings


def test_settings_read_every_field_from_aiorch_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AIORCH_PLAYBOOKS_DIR", str(tmp_path))
    monkeypatch.setenv("AIORCH_DRIFT_INTERVAL_S", "0")
    monkeypatch.setenv("AIORCH_DRIFT_PLAYBOOK", "check.yml")
    monkeypatch.setenv("AIORCH_RAW_RETENTION_S", "60")
    settings = HubSettings(data_dir=tmp_path)
    assert (settings.playbooks_dir, settings.drift_interval_s) == (tmp_path, 0)
    assert (settings.drift_playbook, settings.raw_retention_s) == ("check.yml", 60)
    assert HubSettings(data_dir=tmp_path, raw_retention_s=5).raw_retention_s == 5, "code wins"


def test_settings_treat_an_empty_env_value_as_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("AIORCH_DRIFT_INTERVAL_S", "")
    monkeypatch.setenv("AIORCH_PLAYBOOKS_DIR", "")
    settings = HubSettings(data_dir=tmp_path)
    assert settings.drift_interval_s == 3600
    assert settings.playbooks_dir.name == "playbooks"


def test_settings_refuse_a_bad_env_value_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AIORCH_RAW_RETENTION_S", "-1")
    with pytest.raises(ValueError, match="raw_retention_s"):
        HubSettings(data_dir=tmp_path)
