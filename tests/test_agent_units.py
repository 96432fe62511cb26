"""Agent building blocks: config validation, the check-in schedule, atomic private state,
health probes, logging a lasting failure once, and where the enrollment token may travel."""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from aiorch.endpoint import CA_FILE
from aiorch.hub.context import HubContext
from aiorch.hub.pki.listener import listen_names
from aiorch.wait import wait_until
from edge_agent import identity
from edge_agent.backoff import Schedule
from edge_agent.cli import main
from edge_agent.client import CheckinReply, HubClient
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.contract.workload import HealthCheck
from edge_agent.state import AgentState
from edge_agent.trouble import Trouble
from edge_agent.workloads.health import HealthMonitor

ROLE = Path(__file__).resolve().parents[1] / "playbooks" / "roles" / "aiorch_edge_agent"


def test_config_reads_hub_url_and_state_dir(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text("hub_url: https://127.0.0.1:8700\nstate_dir: /tmp/x\n")
    config = AgentConfig.load(path)
    assert (config.hub_url, config.state_dir) == ("https://127.0.0.1:8700", Path("/tmp/x"))


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
    state.save_credential("https://hub", "a1", "edge1")
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


class _Probed(BaseHTTPRequestHandler):
    """Answers 200, or for the server whose `stall` is set, holds the request until released."""

    server: _ProbeServer

    def do_GET(self) -> None:
        if self.server.stall is not None:
            self.server.probed.set()
            self.server.stall.wait(timeout=30)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stall: threading.Event | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Probed)
        self.stall = stall
        self.probed = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_stalled_health_probe_delays_no_other_workload():
    release = threading.Event()
    slow, fast = _ProbeServer(stall=release), _ProbeServer()
    check = HealthCheck(
        path="/healthz", port=80, initial_delay_s=0, period_s=0.2, timeout_s=10, failure_threshold=3
    )
    monitor = HealthMonitor()
    try:
        monitor.watch("slow", check, slow.server_address[1])
        assert slow.probed.wait(timeout=10), "the slow workload's probe is under way"
        monitor.watch("fast", check, fast.server_address[1])
        wait_until(
            lambda: monitor.watch("fast", check, fast.server_address[1]).state == "healthy",
            timeout=5,
            what="the fast workload to be healthy while the other probe hangs (timeout 10 s)",
        )
        assert monitor.watch("slow", check, slow.server_address[1]).state == "starting"
    finally:
        release.set()
        monitor.close()
        for server in (slow, fast):
            server.shutdown()
            server.server_close()


def test_enroll_token_on_the_command_line_is_refused(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["enroll", "--hub", "https://127.0.0.1:9", "--token", "aie_00_secret"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "--token is not accepted" in err and "AIORCH_ENROLL_TOKEN" in err
    assert "aie_00_secret" not in err


def test_edge_agent_role_passes_the_enroll_token_on_stdin():
    tasks = yaml.safe_load((ROLE / "tasks" / "enroll.yml").read_text())
    [task] = [t for t in tasks if t["name"] == "Enroll with the hub"]
    command = task["ansible.builtin.command"]
    assert not any("token" in arg for arg in command["argv"]), "nothing of the token in argv"
    assert command["stdin"] == "{{ aiorch_edge_agent_enroll_token }}"
    assert "environment" not in task, "Ansible puts environment on the remote command line"
    assert task["no_log"] is True


def test_a_lasting_failure_is_logged_once_per_kind_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
):
    clock = [0.0]
    trouble = Trouble(logging.getLogger("aiorch.test"), repeat_s=3600, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, "aiorch.test"):
        for _ in range(50):
            trouble.failing("401", "refused %d", 401)
            clock[0] += 10
        trouble.failing("422", "refused %d", 422)
        clock[0] += 3600
        trouble.failing("422", "refused %d", 422)
        trouble.over("fine again")
        trouble.over("fine again")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 401",
        "refused 422",
        "refused 422",
        "fine again",
    ]


class _ForgetfulHub(BaseHTTPRequestHandler):
    """Answers every check-in 304 over HTTP/1.1, then drops the connection without saying so,
    as a hub does that restarts or times out an idle keep-alive connection."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(304)
        self.send_header("X-Aiorch-Poll-Interval", "7")
        self.end_headers()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        return None


def _tls_server(ctx: HubContext, tmp_path: Path) -> ThreadingHTTPServer:
    """`_ForgetfulHub` over HTTPS, with a server certificate from a hub CA (DATA_DIR/ca.pem)."""
    ctx.clock.now = time.time()  # type: ignore[attr-defined]  # certificates valid from now
    chain, key = ctx.authority.issue_server(listen_names(["127.0.0.1"], []), time.time(), 3600)
    (tmp_path / "server.pem").write_bytes(chain)
    (tmp_path / "server.key").write_bytes(key)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForgetfulHub, bind_and_activate=False)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.server_bind()
    server.server_activate()
    return server


def test_hub_client_replaces_a_kept_alive_connection_the_hub_dropped(make_context, tmp_path: Path):
    ctx = make_context()
    server = _tls_server(ctx, tmp_path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    verify = identity.tls_context(tmp_path / CA_FILE, None, None)
    client = HubClient(f"https://127.0.0.1:{server.server_address[1]}", verify)
    try:
        replies = [client.checkin("a1", {}, 3) for _ in range(3)]
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert replies == [CheckinReply(False, 3, None, 7.0)] * 3


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8700", "ftp://hub", "https://hub:port", "http://127.0.0.1:8700"]
)
def test_bad_hub_url_is_one_clear_error(url: str):
    """Plain HTTP is one of them: the agent speaks HTTPS only."""
    with pytest.raises(ConfigError, match="hub URL"):
        HubClient(url, ssl.create_default_context())


def test_enrollment_waits_longer_than_a_check_in_for_a_busy_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent import agent

    waited: list[float] = []

    def refuse(state_dir: Path, hub_url: str, token: str, facts: dict, timeout_s: float) -> dict:
        waited.append(timeout_s)
        raise RuntimeError("stop here")

    monkeypatch.setattr(agent, "enroll_with_pin", refuse)
    for request_timeout_s, want in ((10.0, agent.ENROLL_TIMEOUT_S), (120.0, 120.0)):
        config = AgentConfig(state_dir=tmp_path, request_timeout_s=request_timeout_s)
        with pytest.raises(RuntimeError, match="stop here"):
            agent.enroll(config, "https://127.0.0.1:1", "token")
        assert waited.pop() == want
