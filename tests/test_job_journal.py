"""The agent's job journal: the report it derives is what the hub applies once, so its seq moves
only with its content, a final outcome waits for its artifacts, and the log tail fits the
contract. No podman here (tests/test_job_runner.py runs jobs)."""

from __future__ import annotations

import stat
from pathlib import Path

from edge_agent.contract.job import LOG_TAIL_BYTES, parse_job_reports
from edge_agent.jobs.journal import LOG_KEEP_BYTES, ArtifactRecord, Journal, JournalStore


def test_the_seq_moves_with_the_content_and_survives_a_reload(tmp_path: Path):
    store = JournalStore(tmp_path / "jobs")
    journal = Journal("7.1")
    journal.move("running", 100.0)
    journal.started_at = 100.0
    first = store.report(journal)
    assert store.report(journal) == first, "nothing changed: the same seq"
    reloaded = store.load("7.1")
    assert reloaded is not None and store.report(reloaded) == first, "the same after a restart"
    reloaded.move("exited", 160.0, "exited with code 0")
    reloaded.exit_code, reloaded.finished_at = 0, 160.0
    final = store.report(reloaded)
    assert final["seq"] == first["seq"] + 1 and final["state"] == "exited"
    assert parse_job_reports({"7.1": final})["7.1"].final, "a report the hub accepts"
    assert stat.S_IMODE(store.path("7.1").stat().st_mode) == 0o600, "private"
    assert [(t["from"], t["to"]) for t in store.load("7.1").transitions] == [  # type: ignore[union-attr]
        ("pending", "running"),
        ("running", "exited"),
    ]


def test_a_final_outcome_waits_until_the_hub_has_its_artifacts(tmp_path: Path):
    store = JournalStore(tmp_path / "jobs")
    journal = Journal("8.1", state="exited", exit_code=0, started_at=1.0, finished_at=2.0)
    journal.artifacts = [
        ArtifactRecord("/out/m", "a" * 64, 10, "hub", str(tmp_path / "m")),
        ArtifactRecord("/out/big", "b" * 64, 10**10, "site", "/var/lib/x/big"),
    ]
    withheld = store.report(journal)
    assert withheld["state"] == "running" and withheld["artifacts"] == []
    assert "uploading 1 artifact(s)" in withheld["reason"]
    journal.artifacts[0].uploaded = True
    final = store.report(journal)
    assert final["state"] == "exited" and final["seq"] > withheld["seq"]
    assert [(a["location"], a["site_path"]) for a in final["artifacts"]] == [
        ("hub", None),
        ("site", "/var/lib/x/big"),
    ]


def test_the_log_is_capped_on_disk_and_its_tail_fits_a_report(tmp_path: Path):
    store = JournalStore(tmp_path / "jobs")
    journal = Journal("9.1", state="running")
    log = b"x" * (LOG_KEEP_BYTES + 5) + "é".encode() * LOG_TAIL_BYTES + b"!"
    store.save_log("9.1", log)
    assert store.log_path("9.1").stat().st_size == LOG_KEEP_BYTES
    tail = store.report(journal)["log_tail"]  # starts inside an "é": that byte is dropped
    assert set(tail) == {"é", "!"} and len(tail.encode()) <= LOG_TAIL_BYTES
    store.save_log("9.1", b"\xff" * LOG_TAIL_BYTES)  # not UTF-8: replaced, still within
    assert len(store.report(journal)["log_tail"].encode()) <= LOG_TAIL_BYTES
