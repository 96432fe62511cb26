"""Agent building blocks: config validation, the check-in schedule, atomic private state."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edge_agent.backoff import Schedule
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.state import AgentState


def test_config_reads_hub_url_and_state_dir(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text("hub_url: http://127.0.0.1:8700\nstate_dir: /tmp/x\n")
    config = AgentConfig.load(path)
    assert (config.hub_url, config.state_dir) == ("http://127.0.0.1:8700", Path("/tmp/x"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hub_urll: x\n", "unknown key 'hub_urll'"),
        ("- a\n- b\n", "must be a mapping"),
        ("request_timeout_s: -1\n", "must be positive"),
        ("max_backoff_s: soon\n", "must be a number"),
        ("hub_url: [unclosed\n", "cannot read config"),
        ("outbox_max_samples: 2.5\n", "must be a whole number"),
        ("upload_max_batches_per_round: true\n", "must be a whole number"),
        ("outbox_max_bytes: 0\n", "must be positive"),
        ("outbox_max_age_s: .nan\n", "must be positive"),
        ("upload_max_seconds_per_round: -2\n", "must be positive"),
        ("podman_args: --runtime runc\n", "podman_args must be a list of non-empty strings"),
        ("podman_run_args: [--ulimit, 4096]\n", "must be a list of non-empty strings"),
        ("podman_run_args: ['']\n", "must be a list of non-empty strings"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, words: str):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        AgentConfig.load(path)


def test_outbox_and_upload_bounds_are_read(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text(
        "outbox_max_samples: 1e6\noutbox_max_bytes: 67108864\noutbox_max_age_s: 3600\n"
        "upload_max_batches_per_round: 4\nupload_max_seconds_per_round: 2.5\n"
    )
    config = AgentConfig.load(path)
    assert (config.outbox_max_samples, config.outbox_max_bytes) == (1_000_000, 64 << 20)
    assert (config.outbox_max_age_s, config.upload_max_batches_per_round) == (3600.0, 4)
    assert config.upload_max_seconds_per_round == 2.5


def test_podman_arguments_are_read_as_lists(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text(
        "podman_args: [--runtime, /usr/sbin/runc]\n"
        "podman_run_args: [--ulimit, 'nofile=4096:4096', --cgroups=disabled]\n"
    )
    config = AgentConfig.load(path)
    assert config.podman_args == ["--runtime", "/usr/sbin/runc"]
    assert config.podman_run_args == ["--ulimit", "nofile=4096:4096", "--cgroups=disabled"]
    assert (AgentConfig().podman_args, AgentConfig().podman_run_args) == ([], [])


def test_missing_explicit_config_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        AgentConfig.load(tmp_path / "nope.yaml")


def test_success_uses_hub_interval_with_bounded_jitter():
    schedule = Schedule(rng=random.Random(1))
    delays = [schedule.succeeded(10.0) for _ in range(200)]
    assert min(delays) >= 8.0 and max(delays) <= 12.0 and max(delays) - min(delays) > 1.0


def test_failures_back_off_exponentially_up_to_the_cap():
    for failures, ceiling in [(1, 20.0), (2, 40.0), (3, 80.0), (5, 300.0), (9, 300.0)]:
        draws = []
        for seed in range(40):
            schedule = Schedule(interval_s=10.0, max_backoff_s=300.0, rng=random.Random(seed))
            schedule.failures = failures - 1
            draws.append(schedule.failed())
        assert max(draws) <= ceiling and max(draws) > 0.7 * ceiling, (failures, max(draws))
    schedule = Schedule(rng=random.Random(0))
    schedule.failed()
    schedule.succeeded()
    assert schedule.failures == 0


def test_retry_after_is_honoured():
    schedule = Schedule(interval_s=10.0, rng=random.Random(3))
    assert schedule.failed(retry_after_s=7.0) == 7.0
    assert schedule.failed(retry_after_s=10_000.0) == schedule.max_backoff_s


def test_state_files_are_private_and_replaced_atomically(tmp_path: Path):
    state = AgentState(tmp_path / "state")
    state.save_credential("http://hub", "a1", "aia_a1_secret", "edge1")
    state.save_desired(3, {"workloads": [1]})
    assert state.credential_path.stat().st_mode & 0o777 == 0o600
    assert state.desired() == {"revision": 3, "document": {"workloads": [1]}}
    assert not list((tmp_path / "state").glob("*.tmp"))


def test_torn_desired_file_falls_back_to_empty(tmp_path: Path):
    state = AgentState(tmp_path)
    (tmp_path / "desired.json").write_text('{"revision": 4, "docu')
    assert state.desired()["revision"] == 0


@pytest.mark.parametrize(
    ("ref", "tags", "held"),
    [
        ("localhost/model:v1", ["localhost/model:v1"], True),
        ("model:v1", ["localhost/model:v1"], True),
        ("localhost/model:v1@sha256:" + "a" * 64, ["localhost/model:v1"], True),
        ("localhost/model@sha256:" + "a" * 64, ["localhost/model:v7"], True),
        ("localhost/model:v2@sha256:" + "a" * 64, ["localhost/model:v1"], False),
        ("localhost/other:v1", ["localhost/model:v1"], False),
    ],
)
def test_archive_tags_match_the_workloads_image_pinned_or_not(ref: str, tags: list, held: bool):
    from edge_agent.contract.image import holds

    assert holds(ref, tags) is held
