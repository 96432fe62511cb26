"""Jepsen-style: real agents on lab hosts upload through cuts and kill -9s of both sides.

Every sample is identified by (agent, epoch, seq). At the end, for each agent, what its
outbox ever wrote is compared with what the hub stored: nothing lost, nothing stored twice,
nothing unexpected. A second test makes an outage outlast the outbox bound and checks that
the dropped counter the hub holds equals exactly the sequence numbers that never arrived.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiorch.endpoint import hub_tls
from aiorch.hub.process import HubProcess
from aiorch.lab import Lab
from aiorch.wait import wait_until
from tests.fixtures_agents import LabAgent
from tests.fixtures_lab import LabFactory

pytestmark = [pytest.mark.lab, pytest.mark.e2e]  # lab_hub starts a hub


@pytest.fixture(scope="module")
def fault_lab(lab_factory: LabFactory) -> Lab:
    return lab_factory(hosts=2)


@pytest.fixture
def lab_hub(fault_lab: Lab, tmp_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path / "hub", poll_interval=0.5)
    hub.listen = [f"{fault_lab.gateway}:{hub.port}"]
    hub.start()
    yield hub
    hub.stop()


def _admin(hub: HubProcess) -> httpx.Client:
    auth = {"Authorization": f"Bearer {hub.admin_token}"}
    return httpx.Client(
        base_url=f"{hub.url}/api/v1", headers=auth, timeout=30, verify=hub_tls(hub.ca_path)
    )


def _agents(lab: Lab, hub: HubProcess, lib: Path, **config: object) -> list[LabAgent]:
    url = f"https://{lab.gateway}:{hub.port}"
    with _admin(hub) as admin:
        token = admin.post("/enroll-tokens", json={"site": "edge1", "uses": 10}).json()["token"]
    agents = []
    for host in lab.hosts:
        agent = LabAgent(lab, host.name, url, lib, gpu_backend="simulated:1xL4-24GB", **config)
        agent.stop()
        agent.sh(f"rm -rf {agent.config['state_dir']}")
        agent.install()
        agent.enroll(token)
        agent.start()
        agents.append(agent)
    return agents


def test_agents_on_lab_hosts_check_in(fault_lab: Lab, lab_hub: HubProcess, agent_lib: Path):
    agents = _agents(fault_lab, lab_hub, agent_lib)
    try:
        with _admin(lab_hub) as admin:
            wait_until(
                lambda: (
                    len([a for a in admin.get("/agents").json() if a["status"] == "online"])
                    == len(agents)
                ),
                timeout=60,
                what="every lab agent online",
            )
    finally:
        for agent in agents:
            agent.stop()


OUTBOX = (
    "import json, sqlite3; c = sqlite3.connect('/var/lib/aiorch-agent/outbox.db'); "
    "print(json.dumps(c.execute('SELECT name, next_seq, dropped, count FROM epochs').fetchall()))"
)
FAST = {"max_backoff_s": 2, "request_timeout_s": 3, "telemetry_batch_size": 50}


def _outbox(agent: LabAgent) -> list[tuple[str, int, int, int]]:
    """(epoch, next_seq, dropped, unsent) for each epoch the agent's outbox holds."""
    return [tuple(row) for row in json.loads(agent.python(OUTBOX))]  # type: ignore[misc]


def _stored(hub: HubProcess, agent_id: str) -> tuple[dict[str, list[int]], dict[str, int], int]:
    """What the hub holds for an agent: seqs per epoch, drops per epoch, rollup count."""
    db = sqlite3.connect(f"file:{hub.data_dir / 'aiorch.db'}?mode=ro", uri=True)
    seqs: dict[str, list[int]] = {}
    for epoch, seq in db.execute(
        "SELECT st.epoch, s.seq FROM samples s JOIN streams st ON st.id = s.stream_id "
        "WHERE st.agent_id = ? ORDER BY st.epoch, s.seq",
        [agent_id],
    ):
        seqs.setdefault(epoch, []).append(seq)
    drops = dict(db.execute("SELECT epoch, dropped FROM streams WHERE agent_id = ?", [agent_id]))
    rolled = db.execute(
        "SELECT COALESCE(SUM(r.count), 0) FROM rollups_1m r JOIN series s ON s.id = r.series_id "
        "WHERE s.agent_id = ?",
        [agent_id],
    ).fetchone()[0]
    db.close()
    return seqs, drops, rolled


def _drain(agent: LabAgent) -> None:
    """Stop the agent, then run single rounds until its outbox is empty."""
    agent.stop()

    def empty() -> bool:
        agent.lab.exec(agent.host, agent._agent("run", "--once"), check=False, timeout=120)
        return all(unsent == 0 for _, _, _, unsent in _outbox(agent))

    wait_until(empty, timeout=180, interval=0, what=f"{agent.host}'s outbox to drain")


def _agent_id(agent: LabAgent) -> str:
    return str(json.loads(agent.python(
        "print(open('/var/lib/aiorch-agent/credential.json').read())"
    ))["agent_id"])  # fmt: skip


def _unrolled(hub: HubProcess) -> int:
    db = sqlite3.connect(f"file:{hub.data_dir / 'aiorch.db'}?mode=ro", uri=True)
    try:
        return int(
            db.execute("SELECT COUNT(*) FROM telemetry_batches WHERE rolled = 0").fetchone()[0]
        )
    finally:
        db.close()


def _hub_count(hub: HubProcess) -> int:
    try:
        db = sqlite3.connect(f"file:{hub.data_dir / 'aiorch.db'}?mode=ro", uri=True)
        return int(db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_no_sample_lost_or_duplicated_through_cuts_and_kills(
    fault_lab: Lab, lab_hub: HubProcess, agent_lib: Path
):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    agents = _agents(fault_lab, lab_hub, agent_lib, **FAST)
    faults = fault_lab.faults
    try:
        wait_until(lambda: _hub_count(lab_hub) > 0, timeout=60, what="samples to arrive")
        for round_ in range(3):
            victim, other = rng.sample(agents, 2)
            # A cut: the victim keeps collecting into its outbox while it cannot reach the hub.
            faults.cut(victim.host)
            backlog = sum(u for *_, u in _outbox(victim)) + 100
            wait_until(
                lambda v=victim, b=backlog: sum(u for *_, u in _outbox(v)) >= b,
                timeout=60,
                what=f"a backlog on {victim.host} (seed {seed})",
            )
            # kill -9 an agent in the middle of its uploads; systemd restarts it.
            other.kill9()
            wait_until(other.running, timeout=30, what=f"{other.host}'s agent to restart")
            # kill -9 the hub while samples flow in, then start it on the same data.
            before = _hub_count(lab_hub)
            wait_until(lambda b=before: _hub_count(lab_hub) > b, timeout=60, what="ingest")
            lab_hub.stop(signal.SIGKILL)
            lab_hub.start()
            faults.heal(victim.host)
            wait_until(
                lambda v=victim: sum(u for *_, u in _outbox(v)) < 100,
                timeout=120,
                what=f"{victim.host}'s backlog to drain after heal (round {round_}, seed {seed})",
            )
    finally:
        for agent in agents:
            faults.heal(agent.host)
    for agent in agents:
        _drain(agent)
    wait_until(lambda: _unrolled(lab_hub) == 0, timeout=60, what="the hub to roll up every run")
    for agent in agents:
        epochs = _outbox(agent)
        assert len(epochs) == 1, f"one epoch expected on {agent.host}: {epochs}"
        ((epoch, written, dropped, _),) = epochs
        seqs, drops, rolled = _stored(lab_hub, _agent_id(agent))
        stored = seqs.get(epoch, [])
        expected = set(range(written))
        lost = len(expected - set(stored))
        duplicated = len(stored) - len(set(stored)) + (rolled - sum(map(len, seqs.values())))
        unexpected = len(set(stored) - expected) + sum(
            len(v) for e, v in seqs.items() if e != epoch
        )
        assert (lost, duplicated, unexpected, dropped) == (0, 0, 0, 0), (
            f"{agent.host}: written {written}, lost {lost}, duplicated {duplicated}, "
            f"unexpected {unexpected}, dropped {dropped} (seed {seed})"
        )
        assert drops.get(epoch, 0) == 0


def test_outage_beyond_the_bound_is_counted_exactly(
    fault_lab: Lab, lab_hub: HubProcess, agent_lib: Path
):
    agents = _agents(fault_lab, lab_hub, agent_lib, outbox_max_samples=300, **FAST)
    victim = agents[0]
    for agent in agents[1:]:
        agent.stop()
    faults = fault_lab.faults
    try:
        wait_until(lambda: _hub_count(lab_hub) > 0, timeout=60, what="samples to arrive")
        faults.cut(victim.host)
        wait_until(
            lambda: _outbox(victim)[-1][2] > 200,
            timeout=120,
            what="the outbox to overflow and drop samples",
        )
    finally:
        faults.heal(victim.host)
    _drain(victim)
    ((epoch, written, dropped, _),) = _outbox(victim)
    seqs, drops, _ = _stored(lab_hub, _agent_id(victim))
    missing = set(range(written)) - set(seqs[epoch])
    assert dropped > 0
    assert dropped == drops[epoch], "the hub holds the agent's count"
    assert max(missing) - min(missing) + 1 == len(missing), "the oldest samples go, in one run"
    # A batch the hub stored just as the cut took its answer is still unacknowledged when the
    # overflow evicts it: the agent counts it dropped although it arrived, and cannot know
    # better. So the count is exact up to that one batch, never below what is missing.
    surplus = dropped - len(missing)
    assert 0 <= surplus <= FAST["telemetry_batch_size"], (len(missing), dropped)
