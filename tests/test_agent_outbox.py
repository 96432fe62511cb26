"""The agent's durable outbox against a simple model: append, ack, crash (reopen), bounds; and
what it does with damaged, full and read-only files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from aiorch.hub.pki.authority import new_ca
from edge_agent import identity
from edge_agent.agent import Agent, enroll
from edge_agent.client import CheckinReply, HubClient, HubRefused, HubUnavailable, TrustNews
from edge_agent.config import AgentConfig
from edge_agent.outbox import ROW_OVERHEAD, Outbox, Pending
from edge_agent.state import AgentState
from tests.fixtures_hub import HubProcess, enroll_agent, make_enroll_token, tls_context


def _samples(n: int, start: float = 0.0) -> list[tuple[float, str, float, dict[str, str]]]:
    return [(start + i, "m", float(i), {}) for i in range(n)]


def test_samples_leave_only_when_acked(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.append(_samples(5))
    batch = box.pending(3)
    assert batch is not None and (batch.seq_start, batch.seq_end) == (0, 2)
    assert len(box) == 5, "pending() does not remove anything"
    box.ack(batch)
    rest = box.pending(10)
    assert rest is not None and [s["seq"] for s in rest.samples] == [3, 4]


def test_epoch_and_sequence_survive_reopen(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.append(_samples(3))
    epoch = box.epoch
    box.close()
    again = Outbox(tmp_path / "o.db")
    again.append(_samples(1))
    assert again.epoch == epoch
    assert [s["seq"] for s in again.pending(10).samples] == [0, 1, 2, 3]  # type: ignore[union-attr]


def test_bound_drops_oldest_and_counts_exactly(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", max_samples=4)
    box.append(_samples(10))
    batch = box.pending(10)
    assert batch is not None
    assert [s["seq"] for s in batch.samples] == [6, 7, 8, 9]
    assert batch.dropped == 6
    box.ack(batch)
    box.append(_samples(1))
    assert box.pending(10).dropped == 6, "a running total: a resent batch counts nothing twice"  # type: ignore[union-attr]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 20)),
        st.tuples(st.just("ack"), st.integers(1, 30)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_outbox_matches_model(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("box") / "o.db"
    bound = 25
    box = Outbox(path, max_samples=bound)
    model: list[int] = []
    next_seq = 0
    dropped = 0
    for op, n in ops:
        if op == "append":
            box.append(_samples(n))
            model.extend(range(next_seq, next_seq + n))
            next_seq += n
            excess = max(0, len(model) - bound)
            dropped += excess
            model = model[excess:]
        elif op == "ack":
            batch = box.pending(n)
            if batch is not None:
                assert [s["seq"] for s in batch.samples] == model[:n]
                assert batch.dropped == dropped
                box.ack(batch)
                model = model[len(batch.samples) :]
        else:
            box.close()
            box = Outbox(path, max_samples=bound)
        assert len(box) == len(model)
    box.close()


# --- bounds in bytes and age -------------------------------------------------------------------


def _sized(n: int, start: int = 0, pad: int = 0) -> list[tuple[float, str, float, dict[str, str]]]:
    """Samples whose stored size is known: metric 'm', labels {"p": "x" * pad}."""
    return [(float(start + i), "m", float(i), {"p": "x" * pad}) for i in range(n)]


def _size(pad: int) -> int:
    return len("m") + len('{"p":""}') + pad + ROW_OVERHEAD


def test_byte_bound_drops_oldest_and_counts_exactly(tmp_path: Path):
    small, big = _size(10), _size(40)
    box = Outbox(tmp_path / "o.db", max_bytes=4 * small)
    box.append(_sized(6, pad=10))
    first = box.pending(100)
    assert first is not None and [s["seq"] for s in first.samples] == [2, 3, 4, 5]
    assert (first.dropped, box.bytes) == (2, 4 * small)
    box.append(_sized(2, start=6, pad=40))  # 2 big + 4 small is over; 2 big + 0 small is not
    second = box.pending(100)
    assert second is not None and [s["seq"] for s in second.samples] == [6, 7]
    assert (second.dropped, box.bytes) == (6, 2 * big)


def test_age_bound_drops_samples_older_than_max_age(tmp_path: Path):
    clock = [1000.0]
    box = Outbox(tmp_path / "o.db", max_age_s=60, clock=lambda: clock[0])
    box.append([(900.0, "old", 1.0, {}), (950.0, "fresh", 1.0, {}), (999.0, "fresh", 2.0, {})])
    first = box.pending(10)
    assert first is not None and [s["seq"] for s in first.samples] == [1, 2]
    assert first.dropped == 1
    clock[0] = 1030.0
    box.append([(1030.0, "new", 3.0, {})])
    second = box.pending(10)
    assert second is not None and [s["seq"] for s in second.samples] == [2, 3]
    assert second.dropped == 2, "the sample at 950 aged out too"


# --- damaged files ------------------------------------------------------------------------------


def _aside(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.parent.glob(f"{path.name}.corrupt-*")
        if not p.name.endswith(("-wal", "-shm"))
    )


def test_garbage_file_is_moved_aside_and_a_new_epoch_starts(tmp_path: Path, caplog):
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with caplog.at_level(logging.ERROR):
        box = Outbox(path)
    [aside] = _aside(path)
    assert aside.read_bytes().startswith(b"this is not a database")
    assert "file is not a database" in caplog.text
    box.append(_samples(2))
    batch = box.pending(10)
    assert batch is not None and batch.epoch == box.epoch
    assert (batch.seq_start, batch.seq_end, batch.dropped) == (0, 1, 0)


def _drain(box: Outbox) -> tuple[dict[str, list[int]], int]:
    """Everything a hub would receive: seqs per epoch, and the drops it counts (per epoch the
    largest running total it was sent, summed over epochs)."""
    seen: dict[str, list[int]] = {}
    dropped: dict[str, int] = {}
    while (batch := box.pending(300)) is not None:
        seen.setdefault(batch.epoch, []).extend(s["seq"] for s in batch.samples)
        dropped[batch.epoch] = max(dropped.get(batch.epoch, 0), batch.dropped)
        box.ack(batch)
    return seen, sum(dropped.values())


def _filled(path: Path) -> str:
    """An outbox of 3000 samples, the first 100 acknowledged; returns its epoch."""
    box = Outbox(path)
    box.append(_sized(3000, pad=50))
    acked = box.pending(100)
    assert acked is not None
    box.ack(acked)
    epoch = box.epoch
    box.close()
    assert epoch is not None
    return epoch


def test_damaged_page_is_salvaged_around_and_its_rows_counted_lost(tmp_path: Path):
    path = tmp_path / "o.db"
    old_epoch = _filled(path)
    db = sqlite3.connect(path)
    leaves = db.execute(
        "SELECT pageno, ncell FROM dbstat WHERE name = 'samples' AND pagetype = 'leaf' "
        "ORDER BY pageno"
    ).fetchall()
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    page, cells = leaves[len(leaves) // 2]
    with path.open("r+b") as f:  # bit rot: one leaf page of sample rows zeroed
        f.seek((page - 1) * page_size)
        f.write(bytes(page_size))

    box = Outbox(path)
    assert len(_aside(path)) == 1 and box.epoch != old_epoch
    seen, dropped = _drain(box)
    assert dropped == cells, "exactly the rows on the damaged page are lost"
    assert len(seen[old_epoch]) == 2900 - cells
    assert set(seen[old_epoch]) < set(range(100, 3000)), "old (epoch, seq) kept"


def test_epoch_whose_samples_were_all_lost_reports_them_without_samples(tmp_path: Path):
    path = tmp_path / "o.db"
    old_epoch = _filled(path)
    db = sqlite3.connect(path)
    pages = db.execute("SELECT pageno FROM dbstat WHERE name = 'samples'").fetchall()
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with path.open("r+b") as f:  # every page of sample rows gone; the epochs table intact
        for (page,) in pages:
            f.seek((page - 1) * page_size)
            f.write(bytes(page_size))

    box = Outbox(path)
    owed = box.pending(100)
    assert owed is not None and owed.epoch == old_epoch and owed.samples == []
    assert (owed.seq_start, owed.seq_end, owed.dropped) == (3000, 3000, 2900)
    box.ack(owed)
    assert box.pending(100) is None, "the old epoch has nothing left to say"


def test_truncated_file_is_replaced_and_every_sequence_number_is_accounted_for(tmp_path: Path):
    path = tmp_path / "o.db"
    old_epoch = _filled(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size * 6 // 10)

    box = Outbox(path)
    assert len(_aside(path)) == 1
    assert box.epoch != old_epoch, "a new epoch: the damaged file's next seq can't be trusted"
    box.append(_sized(5))
    seen, dropped = _drain(box)
    salvaged = seen.get(old_epoch, [])
    assert salvaged == sorted(set(salvaged)) and set(salvaged) <= set(range(100, 3000))
    assert seen[box.epoch] == [0, 1, 2, 3, 4]
    assert 100 + len(salvaged) + dropped == 3000, "acked + salvaged + reported lost"


def test_v1_file_is_migrated_in_place(tmp_path: Path):
    """Outboxes written before epochs had their own table keep their epoch, seqs and drops."""
    path = tmp_path / "o.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE samples (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, metric TEXT NOT NULL, "
        "value REAL NOT NULL, labels TEXT NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "INSERT INTO meta VALUES ('epoch', 'e1'), ('next_seq', '9'), ('dropped_unreported', '7');"
        "INSERT INTO samples VALUES (7, 1.0, 'm', 1.0, '{\"a\": \"b\"}'), (8, 2.0, 'm', 2.0, '{}');"
    )
    db.close()
    box = Outbox(path)
    box.append(_samples(1))
    batch = box.pending(10)
    assert batch is not None and batch.epoch == "e1" == box.epoch
    assert [(s["seq"], s["labels"]) for s in batch.samples] == [(7, {"a": "b"}), (8, {}), (9, {})]
    assert batch.dropped == 7


# --- unwritable files ---------------------------------------------------------------------------


def test_full_disk_counts_samples_as_dropped_and_skips_their_seqs(tmp_path: Path, caplog):
    box = Outbox(tmp_path / "o.db")
    box.append(_samples(3))
    assert box.conn is not None
    pages = box.conn.execute("PRAGMA page_count").fetchone()[0]
    box.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full"
    with caplog.at_level(logging.ERROR):
        box.append(_sized(500, pad=100))
        box.append(_sized(500, pad=100))
    assert "database or disk is full" in caplog.text
    assert caplog.text.count("database or disk is full") == 1, "logged when it starts"
    assert box.unwritten == 1000 and len(box) == 3
    box.conn.execute("PRAGMA max_page_count = 1000000")
    box.append(_samples(2))
    batch = box.pending(10)
    assert batch is not None
    assert [s["seq"] for s in batch.samples] == [0, 1, 2, 1003, 1004]
    assert batch.dropped == 1000 and box.unwritten == 0, "the hub can explain the gap"


def _unprivileged(path: Path) -> tuple[int, int, bool]:
    """_use_readonly(path) as a user the file system really refuses. Root ignores permissions,
    so as root it runs in a spawned interpreter (not forked: a lock some thread of this process
    holds would stay held there) that drops to uid/gid 65534 first."""
    if os.geteuid() != 0:
        return _use_readonly(path)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: tuple[int, int, bool] = pool.apply(_as_nobody, (path,))
    return result


def _as_nobody(path: Path) -> tuple[int, int, bool]:
    os.setgid(65534)
    os.setuid(65534)
    return _use_readonly(path)


@pytest.fixture
def readonly_dir() -> Iterator[Path]:
    """A state dir the agent may read but not write."""
    root = Path(tempfile.mkdtemp(prefix="aiorch-ro-"))
    state = root / "state"
    state.mkdir()
    try:
        os.chmod(root, 0o755)
        os.chmod(state, 0o555)
        yield state
    finally:
        os.chmod(state, 0o755)
        shutil.rmtree(root)


def _use_readonly(path: Path) -> tuple[int, int, bool]:
    box = Outbox(path)
    box.append(_samples(5))
    box.append(_samples(2))
    result = (box.unwritten, len(box), box.pending(10) is None)
    box.close()
    return result


def test_readonly_state_dir_does_not_raise(readonly_dir: Path):
    assert _unprivileged(readonly_dir / "o.db") == (7, 0, True)


def test_readonly_existing_outbox_does_not_raise(readonly_dir: Path):
    os.chmod(readonly_dir, 0o755)
    box = Outbox(readonly_dir / "o.db")
    box.append(_samples(3))
    box.close()
    os.chmod(readonly_dir, 0o555)
    unwritten, _, _ = _unprivileged(readonly_dir / "o.db")
    assert unwritten == 7
    assert len(Outbox(readonly_dir / "o.db")) == 3, "the file is intact"


# --- everything at once, against a model ----------------------------------------------------------

bounded_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 12), st.integers(0, 40), st.integers(0, 150)),
        st.tuples(st.just("ack"), st.integers(1, 30), st.just(0), st.just(0)),
        st.tuples(st.just("reopen"), st.booleans(), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 80), st.just(0), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(ops=bounded_ops)
def test_bounded_outbox_matches_model_through_crashes(tmp_path_factory, ops):
    """Count, byte and age bounds together, reopened cleanly or after a 'crash' (the old
    connection abandoned, not closed). Each batch carries the epoch's running drop total; once
    drained, what the hub received plus the drops it was told of is every sequence number."""
    path = tmp_path_factory.mktemp("box") / "o.db"
    clock = [1000.0]
    bounds = {"max_samples": 20, "max_bytes": 20 * _size(20), "max_age_s": 100.0}
    box = Outbox(path, clock=lambda: clock[0], **bounds)
    abandoned = []
    model: list[tuple[int, float, int]] = []  # (seq, ts, size)
    next_seq = dropped = delivered = 0
    for op, a, b, c in ops:
        if op == "append":
            samples = [(clock[0] - c, "m", 1.0, {"p": "x" * b}) for _ in range(a)]
            box.append(samples)
            model += [(next_seq + i, clock[0] - c, _size(b)) for i in range(a)]
            next_seq += a
            while model and (
                len(model) > bounds["max_samples"]
                or sum(s for *_, s in model) > bounds["max_bytes"]
                or model[0][1] < clock[0] - bounds["max_age_s"]
            ):
                model.pop(0)
                dropped += 1
        elif op == "ack":
            batch = box.pending(a)
            if batch is not None:
                assert [s["seq"] for s in batch.samples] == [m[0] for m in model[:a]]
                assert batch.dropped == dropped
                box.ack(batch)
                delivered += len(batch.samples)
                model = model[len(batch.samples) :]
        elif op == "reopen":
            if a:
                box.close()
            else:
                abandoned.append(box)
            box = Outbox(path, clock=lambda: clock[0], **bounds)
        else:
            clock[0] += a
        assert len(box) == len(model)
        assert box.bytes == sum(s for *_, s in model)
        assert delivered + dropped + len(model) == next_seq
    box.append([(clock[0], "m", 1.0, {})])  # the next round's samples carry the latest drops
    seen, hub_dropped = _drain(box)
    assert delivered + sum(len(seqs) for seqs in seen.values()) + hub_dropped == next_seq + 1
    box.close()
    for old in abandoned:
        old.close()


# --- the agent draining it ----------------------------------------------------------------------


class StubHub:
    """The hub as the agent's HubClient sees it, recording the order of calls."""

    def __init__(
        self,
        refuse: bool = False,
        down: bool = False,
        status: int = 422,
        refuse_checkin: int | None = None,
    ) -> None:
        self.calls: list[str] = []
        self.refuse = refuse
        self.refuse_checkin = refuse_checkin
        self.down = down
        self.status = status
        self.seqs: list[int] = []
        self.dropped: list[int] = []
        self.news = TrustNews(None, None, False)  # no renewal asked, no new CAs

    def checkin(self, agent_id: str, body: dict, known_revision: int) -> CheckinReply:
        self.calls.append("checkin")
        if self.down:
            raise HubUnavailable("hub unreachable: stub")
        if self.refuse_checkin is not None:
            raise HubRefused(self.refuse_checkin, "stub")
        return CheckinReply(False, known_revision, None, 10.0)

    def upload(self, agent_id: str, batch: dict) -> dict:
        self.calls.append("upload")
        if self.refuse:
            raise HubRefused(self.status, "stub")
        self.seqs += [s["seq"] for s in batch["samples"]]
        self.dropped.append(batch["dropped"])
        return {}

    def close(self) -> None:
        return None


def _stub_identity(state: Path) -> None:
    """identity.pem and hub-ca.pem as enrollment leaves them, from a throwaway self-signed CA
    certificate valid for years (no renewal due): the stubbed hub never looks at them."""
    key, cert = new_ca(time.time(), "stub")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    identity.save(state / identity.IDENTITY_FILE, key, pem)
    identity.save_bundle(state, pem)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    state = tmp_path / "state"
    # Nothing listens on port 9: a renewal by proof after a 401 finds the hub away.
    AgentState(state).save_credential("https://127.0.0.1:9", "a1", "edge1")
    _stub_identity(state)
    made: list[Agent] = []

    def make(hub: StubHub, **config: object) -> Agent:
        agent = Agent(
            AgentConfig(state_dir=state, gpu_backend="simulated:8xH100-80GB", **config)  # type: ignore[arg-type]
        )
        agent.trust.hub.close()
        agent.trust.hub = hub  # type: ignore[assignment]
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def test_round_checks_in_first_and_uploads_at_most_n_batches(agent_factory):
    hub = StubHub()
    agent = agent_factory(hub, telemetry_batch_size=100, upload_max_batches_per_round=3)
    agent.outbox.append(_samples(5000, start=time.time()))  # within the age bound
    assert agent.round() == 10.0
    assert hub.calls == ["checkin", "upload", "upload", "upload"]
    assert hub.seqs == list(range(300)), "oldest first"
    hub.calls.clear()
    agent.round()
    assert hub.calls == ["checkin", "upload", "upload", "upload"], "the backlog waits its turn"


def test_upload_time_budget_ends_the_round_early(agent_factory, monkeypatch):
    clock = [0.0]

    class SlowHub(StubHub):
        def upload(self, agent_id: str, batch: dict) -> dict:
            clock[0] += 1.0  # each batch takes a second
            return super().upload(agent_id, batch)

    hub = SlowHub()
    agent = agent_factory(hub, telemetry_batch_size=100, upload_max_seconds_per_round=2.5)
    agent.outbox.append(_samples(5000, start=time.time()))  # within the age bound
    monkeypatch.setattr("edge_agent.agent.time.monotonic", lambda: clock[0])
    assert agent.flush_telemetry() == 300
    assert hub.calls == ["upload"] * 3


def test_samples_of_a_round_are_kept_when_the_hub_is_down(agent_factory):
    agent = agent_factory(StubHub(down=True))
    with pytest.raises(HubUnavailable):
        agent.round()
    assert len(agent.outbox) > 8 * 10, "this round's GPU and host samples wait in the outbox"


def test_full_disk_does_not_stop_check_ins(agent_factory):
    hub = StubHub()
    agent = agent_factory(hub)
    conn = agent.outbox.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    assert agent.cycle() > 0 and agent.cycle() > 0
    assert hub.calls.count("checkin") == 2 and agent.schedule.failures == 0
    assert agent.outbox.unwritten > 0 and len(agent.outbox) == 0


def test_refused_batch_is_set_aside_counted_as_dropped_and_the_rest_flows(agent_factory, caplog):
    hub = StubHub(refuse=True)
    agent = agent_factory(hub, telemetry_batch_size=100, upload_max_batches_per_round=3)
    agent.outbox.append(_samples(250, start=time.time()))
    with caplog.at_level(logging.ERROR, "aiorch.agent"):
        assert agent.round() == 10.0
    assert hub.calls == ["checkin", "upload", "upload", "upload"], "no batch blocks the next"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "counted as dropped" in refused[0], "one line, not one a batch"
    kept = sorted((agent.config.state_dir / "refused-telemetry").iterdir())
    assert [json.loads(k.read_text())["batch"]["seq_start"] for k in kept] == [0, 100, 200]
    assert json.loads(kept[0].read_text())["reason"] == "hub refused (422): stub"
    hub.refuse = False
    agent.flush_telemetry(max_batches=100)
    assert hub.seqs[0] == 300 and len(agent.outbox) == 0
    assert hub.dropped[-1] == 300, "the hub hears of the refused samples as dropped"


def test_a_refused_sender_is_no_reason_to_drop_a_batch(agent_factory):
    hub = StubHub(refuse=True, status=401)
    agent = agent_factory(hub)
    agent.outbox.append(_samples(5, start=time.time()))
    with pytest.raises(HubRefused):
        agent.flush_telemetry()
    assert len(agent.outbox) == 5, "a revoked credential says nothing about the samples"


@pytest.mark.e2e
def test_batch_the_real_hub_refuses_is_set_aside_and_its_drops_reach_the_hub(
    hub: HubProcess, tmp_path: Path
):
    config = AgentConfig(
        hub_url=hub.url, state_dir=tmp_path / "state", gpu_backend="none", telemetry_batch_size=3
    )
    with hub.client(hub.admin_token) as admin:
        enroll(config, hub.url, make_enroll_token(admin))
    agent = Agent(config)
    try:
        now = time.time()
        good = [(now, "good_metric", 1.0, {})]
        agent.outbox.append([*good * 2, (now, "not a metric name", 1.0, {}), *good * 4])
        assert agent.flush_telemetry(max_batches=10) == 4, "the batches after it arrive"
        assert len(agent.outbox) == 0
    finally:
        agent.close()
    db = sqlite3.connect(hub.data_dir / "aiorch.db")
    try:
        stored = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        dropped = db.execute("SELECT SUM(dropped) FROM streams").fetchone()[0]
    finally:
        db.close()
    assert (stored, dropped) == (4, 3), "the refused batch's three samples are counted as dropped"
    [kept] = (config.state_dir / "refused-telemetry").iterdir()
    assert "not a metric name" in kept.read_text()


@pytest.mark.e2e
def test_hub_accepts_a_batch_that_only_reports_drops(hub: HubProcess):
    with hub.client(hub.admin_token) as admin:
        enrolled = enroll_agent(hub, make_enroll_token(admin), "drops-only")
    client = HubClient(hub.url, tls_context(hub.ca_path, enrolled["credential"]))
    try:
        reply = client.upload(enrolled["agent_id"], asdict(Pending("e0", 3000, 3000, 2900, [])))
    finally:
        client.close()
    assert (reply["acked_through"], reply["stored"]) == (3000, 0)


def test_rounds_go_on_locally_while_check_ins_back_off(agent_factory):
    hub = StubHub(down=True)
    agent = agent_factory(hub, max_backoff_s=3600)
    for _ in range(6):  # a few failures: the next try at the hub is far off
        agent.retry_at = 0.0
        agent.cycle()
    tries, collected = hub.calls.count("checkin"), len(agent.outbox)
    wait = agent.cycle()  # before the next try: collect (and reconcile) without the hub
    assert hub.calls.count("checkin") == tries, "no check-in before its backoff is over"
    assert len(agent.outbox) > collected, "the round still collected"
    assert 0 < wait <= agent.schedule.interval_s, "and the next round is an interval away"


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (401, "re-enroll this host with `aiorch-agent enroll`"),
        (413, "raise the hub's max_body_bytes"),
        (422, "install the agent version that matches the hub"),
    ],
)
def test_refused_check_in_backs_off_says_what_to_do_once_and_rounds_go_on(
    agent_factory, caplog, status: int, advice: str
):
    hub = StubHub(refuse_checkin=status)
    agent = agent_factory(hub, max_backoff_s=3600)
    with caplog.at_level(logging.WARNING, "aiorch.agent"):
        for _ in range(5):
            agent.retry_at = 0.0  # as if each backoff were over
            assert 0 < agent.cycle() <= agent.schedule.interval_s
        tries, collected = hub.calls.count("checkin"), len(agent.outbox)
        agent.cycle()
        assert len(agent.outbox) > collected, "the rounds in between still collect"
        hub.refuse_checkin = None
        agent.retry_at = 0.0
        agent.cycle()
    assert tries == 5 and agent.schedule.failures == 0, "refusals counted, then reset"
    assert hub.calls.count("checkin") == 6, "no check-in while backing off"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert f"({status})" in lines[0] and advice in lines[0]
    assert lines[1] == "check-in accepted again"
