"""The README's flow, end to end with the real CLIs: hub, enrollment token, agent, agents list."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from aiorch.wait import wait_until
from edge_agent import identity
from edge_agent.identity import BUNDLE_FILE, IDENTITY_FILE
from tests.fixtures_hub import AGENT, HubProcess, enroll_agent, make_enroll_token

pytestmark = pytest.mark.e2e


def _agent(
    config: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture
def agent_config(tmp_path: Path, hub: HubProcess) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {"hub_url": hub.url, "state_dir": str(tmp_path / "state"), "gpu_backend": "nvml"}
        )
    )
    return path


@pytest.fixture
def enrolled(hub: HubProcess, agent_config: Path) -> dict:
    token = hub.cli_json("enroll-token", "create", "--site", "edge1", "--ttl", "1h")["token"]
    result = _agent(agent_config, "enroll", "--hub", hub.url, stdin=token + "\n")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_enrolled_agent_runs_once_and_shows_online(
    hub: HubProcess, agent_config: Path, enrolled: dict
):
    result = _agent(agent_config, "run", "--once")
    assert result.returncode == 0, result.stderr
    rows = hub.cli_json("agents", "list")
    assert [(r["id"], r["status"]) for r in rows] == [(enrolled["agent_id"], "online")]


def test_identity_is_private_and_not_printed(agent_config: Path, enrolled: dict, tmp_path: Path):
    """The key and certificate are identity.pem (0600), beside the hub's CAs; credential.json
    says who the agent is and holds no secret; enroll prints neither key nor certificate."""
    state = tmp_path / "state"
    for name in ("credential.json", IDENTITY_FILE, BUNDLE_FILE):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name
    assert set(enrolled) == {"agent_id", "site", "host", "not_after"}
    cred = json.loads((state / "credential.json").read_text())
    assert cred == {"hub_url": cred["hub_url"], "agent_id": enrolled["agent_id"], "site": "edge1"}
    mine = identity.load(state / IDENTITY_FILE)
    assert mine is not None and mine.not_after == enrolled["not_after"]


def test_agent_restart_keeps_identity_and_desired_state(
    hub: HubProcess, agent_config: Path, enrolled: dict, tmp_path: Path
):
    doc = {"workloads": []}
    with hub.client(hub.admin_token) as admin:
        admin.put(f"/agents/{enrolled['agent_id']}/desired", json={"document": doc})
    assert _agent(agent_config, "run", "--once").returncode == 0
    state = tmp_path / "state"
    before = [(state / n).read_text() for n in ("credential.json", IDENTITY_FILE)]
    assert json.loads((state / "desired.json").read_text()) == {"revision": 1, "document": doc}
    assert _agent(agent_config, "run", "--once").returncode == 0, (
        "a second process reuses the state"
    )
    assert [(state / n).read_text() for n in ("credential.json", IDENTITY_FILE)] == before
    row = hub.cli_json("agents", "list")[0]
    assert row["applied_revision"] == 1 and row["desired_revision"] == 1


def test_hub_restart_keeps_everything(hub: HubProcess, agent_config: Path, enrolled: dict):
    assert _agent(agent_config, "run", "--once").returncode == 0
    token_before = hub.admin_token
    hosts_before = hub.cli_json("hosts", "list")
    hub.stop()
    hub.start()
    assert hub.admin_token == token_before
    assert hub.cli_json("hosts", "list") == hosts_before
    assert _agent(agent_config, "run", "--once").returncode == 0
    assert hub.cli_json("agents", "list")[0]["status"] == "online"


def test_agent_keeps_samples_while_hub_is_down_and_sends_them_after(
    hub: HubProcess, agent_config: Path, enrolled: dict, tmp_path: Path
):
    hub.stop()
    down = _agent(agent_config, "run", "--once")
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert down.stderr.splitlines()[-1].startswith("aiorch-agent: error: hub unreachable")
    hub.start()
    assert _agent(agent_config, "run", "--once").returncode == 0
    with hub.client(hub.admin_token) as admin:
        assert admin.get(f"/agents/{enrolled['agent_id']}").json()["status"] == "online"

    db = sqlite3.connect(hub.data_dir / "aiorch.db")
    stored = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    outbox = sqlite3.connect(tmp_path / "state" / "outbox.db")
    written, unsent = outbox.execute("SELECT next_seq, count FROM epochs").fetchone()
    assert (stored, unsent) == (written, 0), "both rounds' samples arrive, the offline ones too"


def test_enroll_with_bad_token_is_one_line_error(hub: HubProcess, agent_config: Path):
    """A token with this hub's pin but no such token behind it: the hub says so."""
    pin = hub.cli_json("enroll-token", "create", "--site", "edge1")["token"].rpartition(":")[2]
    bad = f"aie_00_bad:sha256:{pin}"
    result = _agent(agent_config, "enroll", "--hub", hub.url, env={"AIORCH_ENROLL_TOKEN": bad})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "aiorch-agent: error: hub refused (401): unknown enrollment token"
    )


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("aie_00_bad", "has no CA pin"),
        ("aie_00_bad:sha256:" + "0" * 64, "is not the one the token pins (sha256:000"),
    ],
    ids=["no-pin", "another-hubs-pin"],
)
def test_enroll_refuses_a_token_without_this_hubs_pin_in_one_line(
    hub: HubProcess, agent_config: Path, token: str, words: str
):
    result = _agent(agent_config, "enroll", "--hub", hub.url, env={"AIORCH_ENROLL_TOKEN": token})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("aiorch-agent: error: ") and words in last


def test_enroll_refuses_a_plain_http_hub_in_one_line(hub: HubProcess, agent_config: Path):
    token = hub.cli_json("enroll-token", "create", "--site", "edge1")["token"]
    plain = hub.url.replace("https://", "http://")
    result = _agent(agent_config, "enroll", "--hub", plain, stdin=token)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hub URL must look like https://" in result.stderr.splitlines()[-1]


def test_run_before_enroll_says_what_to_do(agent_config: Path):
    result = _agent(agent_config, "run", "--once")
    assert result.returncode == 1 and "run 'aiorch-agent enroll' first" in result.stderr


def test_healthz_needs_no_token(hub: HubProcess):
    with hub.client(root=True) as anyone:
        assert anyone.get("/healthz").json() == {"status": "ok"}


def test_enroll_takes_the_token_from_a_file_or_the_environment(hub: HubProcess, tmp_path: Path):
    """Both enroll this same box: the second with a token made to replace its agent."""
    host: dict[str, str] = {}
    for way in ("file", "env"):
        config = tmp_path / f"{way}.yaml"
        config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / way), "gpu_backend": "none"}))
        with hub.client(hub.admin_token) as admin:
            token = make_enroll_token(admin, ttl_s=3600, **host)
        if way == "file":
            (tmp_path / "token").write_text(token + "\n")
            args, env = ["--token-file", str(tmp_path / "token")], None
        else:
            args, env = [], {"AIORCH_ENROLL_TOKEN": token}
        result = _agent(config, "enroll", "--hub", hub.url, *args, env=env)
        assert result.returncode == 0, (way, result.stderr)
        assert (tmp_path / way / "credential.json").exists()
        assert identity.load(tmp_path / way / IDENTITY_FILE) is not None
        host = {"host": json.loads(result.stdout)["host"], "replace": True}


def test_enroll_without_a_token_says_where_it_may_come_from(hub: HubProcess, agent_config: Path):
    result = _agent(agent_config, "enroll", "--hub", hub.url, stdin="")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "aiorch-agent: error: no enrollment token: "
        "pass it on stdin, in AIORCH_ENROLL_TOKEN, or with --token-file"
    )


def _outbox_rounds(state: Path) -> int:
    """Samples the agent has written so far (each round adds some), 0 before the first."""
    try:
        db = sqlite3.connect(f"file:{state / 'outbox.db'}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT MAX(next_seq) FROM epochs").fetchone()[0] or 0)
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_revoked_agent_stays_up_says_so_once_and_takes_up_a_new_enrollment(
    hub: HubProcess, agent_config: Path, enrolled: dict, tmp_path: Path
):
    config = yaml.safe_load(agent_config.read_text())
    agent_config.write_text(yaml.safe_dump({**config, "max_backoff_s": 1}))
    doc = {"workloads": []}
    with hub.client(hub.admin_token) as admin:
        admin.put(f"/agents/{enrolled['agent_id']}/desired", json={"document": doc})
    assert _agent(agent_config, "run", "--once").returncode == 0
    state = tmp_path / "state"
    # Re-enrolling the host elsewhere (a token made to replace its agent) revokes this agent.
    hostname = hub.cli_json("agents", "list")[0]["host_name"]
    with hub.client(hub.admin_token) as admin:
        enroll_agent(hub, make_enroll_token(admin, host=hostname, replace=True), hostname)
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [AGENT, "run", "--config", str(agent_config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: "credential refused" in log.read_text(), timeout=30, what="the line")
        first = _outbox_rounds(state)
        # Rounds go on (and with them, check-ins every max_backoff_s = 1 s): several more.
        wait_until(lambda: _outbox_rounds(state) >= 4 * first, timeout=60, what="more rounds")
        assert proc.poll() is None, "the agent is still running"
        lines = [line for line in log.read_text().splitlines() if "refused" in line]
        assert len(lines) == 1, lines
        assert "credential refused (401)" in lines[0] and "`aiorch-agent enroll`" in lines[0]
        assert "desired revision 1" in lines[0]
        # Doing what it says: the running agent takes up the new identity, no restart.
        with hub.client(hub.admin_token) as admin:
            token = make_enroll_token(admin, host=hostname, replace=True)
        assert _agent(agent_config, "enroll", "--hub", hub.url, stdin=token).returncode == 0
        wait_until(
            lambda: "check-in accepted again" in log.read_text(), timeout=30, what="recovery"
        )
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
