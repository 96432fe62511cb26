"""`aiorch audit verify`, the real CLI against a real hub database: an intact log passes, and
every way of tampering with it (editing, deleting, reordering, inserting or rewriting rows,
restoring an older database, forging or contradicting checkpoints) fails naming where."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aiorch.audit_chain import CHECKPOINTS_FILE, row_hash
from aiorch.errors import UserError
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit_checkpoints, tokens
from aiorch.hub.services.audit_key import AuditKey
from aiorch.wait import wait_until
from edge_agent.contract.audit import sign
from edge_agent.witness import CHECKPOINT_FILE, observe
from tests.fixtures_hub import AIORCH, HubProcess, make_token

ROWS = 8  # checkpoints at sizes 4 and 8


@pytest.fixture
def data_dir(make_context: Callable[..., HubContext]) -> Path:
    """A hub's data dir with ROWS audit rows and two signed checkpoints; the store closed."""
    ctx = make_context(audit_checkpoint_rows=4)
    _grow(ctx, ROWS)
    ctx.store.close()
    return ctx.settings.data_dir


def _grow(ctx: HubContext, rows: int) -> None:
    for _ in range(rows // 4):
        for n in range(4):
            tokens.create(ctx, f"t{n}", "user:test", role="viewer")
        ctx.clock.now += 1  # type: ignore[attr-defined]
        audit_checkpoints.checkpoint(ctx)


def _verify(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    return subprocess.run(
        [AIORCH, "audit", "verify", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def _failed(result: subprocess.CompletedProcess[str], first: str) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"aiorch: audit: {first}"), result.stderr
    return result.stderr


def _db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "aiorch.db", isolation_level=None)


def _row(db: sqlite3.Connection, seq: int) -> dict[str, Any]:
    db.row_factory = sqlite3.Row
    return dict(db.execute("SELECT * FROM audit_log WHERE id = ?", [seq]).fetchone())


# ---- the rows -------------------------------------------------------------------------------


def test_an_intact_log_verifies(data_dir: Path):
    result = _verify(data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"audit log intact: {ROWS} rows, head ")
    assert "4 checkpoints verified" in result.stdout, "sizes 4 and 8, in the DB and the file"
    report = json.loads(_verify(data_dir, "--output", "json").stdout)
    assert report["ok"] is True and report["problems"] == [] and report["rows"] == ROWS


def test_an_edited_row_is_named(data_dir: Path):
    with _db(data_dir) as db:
        db.execute("""UPDATE audit_log SET detail = '{"role": "admin"}' WHERE id = 3""")
    errors = _failed(_verify(data_dir), "seq 3: its hash does not match its content")
    assert "checkpoint size 4 (time 1800000001) does not match the chain at seq 4" in errors


@pytest.mark.parametrize(
    ("doomed", "named"),
    [("id = 3", "seq 3: missing (the chain goes from seq 2 to seq 4)"),
     ("id <= 2", "seq 1: missing (the chain starts at seq 3)")],
)  # fmt: skip
def test_a_deleted_row_is_named(data_dir: Path, doomed: str, named: str):
    with _db(data_dir) as db:
        db.execute(f"DELETE FROM audit_log WHERE {doomed}")
    _failed(_verify(data_dir), named)


def test_deleting_the_newest_rows_is_caught_by_the_checkpoints(data_dir: Path):
    with _db(data_dir) as db:
        db.execute("DELETE FROM audit_log WHERE id > 6")
    _failed(_verify(data_dir), "database: checkpoint size 8 (time 1800000002) covers seq 8 but")


def test_reordered_rows_are_named(data_dir: Path):
    with _db(data_dir) as db:
        third, fourth = _row(db, 3), _row(db, 4)
        db.execute("DELETE FROM audit_log WHERE id IN (3, 4)")
        for seq, row in ((3, fourth), (4, third)):
            db.execute("INSERT INTO audit_log VALUES (:id, :ts, :actor, :action, :target, "
                       ":detail, :prev_hash, :hash)", {**row, "id": seq})  # fmt: skip
    _failed(_verify(data_dir), "seq 3: does not follow seq 2")


def test_an_inserted_row_is_named(data_dir: Path):
    """A forger who knows the hash function chains the new row well; the next row betrays it."""
    with _db(data_dir) as db:
        db.execute("UPDATE audit_log SET id = id + 100 WHERE id > 3")
        db.execute("UPDATE audit_log SET id = id - 99 WHERE id > 100")
        previous = _row(db, 3)
        forged = {"seq": 4, "ts": 1.0, "actor": "user:nobody", "action": "token.create",
                  "target": "token:x", "detail": "{}"}  # fmt: skip
        digest = row_hash(bytes.fromhex(previous["hash"]), forged)
        db.execute(
            "INSERT INTO audit_log VALUES (4, 1.0, 'user:nobody', 'token.create', 'token:x', "
            "'{}', ?, ?)",
            [previous["hash"], digest.hex()],
        )
    _failed(_verify(data_dir), "seq 4: inserted (seq 5 follows seq 3 in the chain)")


def test_a_consistently_rewritten_chain_fails_its_checkpoints(data_dir: Path):
    """Someone with the database (not the key) rewrites history and recomputes every hash."""
    with _db(data_dir) as db:
        db.execute("""UPDATE audit_log SET actor = 'user:someone-else' WHERE id = 2""")
        prev = bytes.fromhex(_row(db, 1)["hash"])
        for seq in range(2, ROWS + 1):
            row = _row(db, seq)
            digest = row_hash(prev, {**row, "seq": seq})
            db.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?",
                       [prev.hex(), digest.hex(), seq])  # fmt: skip
            prev = digest
    errors = _failed(_verify(data_dir), "database: checkpoint size 4 (time 1800000001) does not")
    assert "history was rewritten" in errors
    assert f"{CHECKPOINTS_FILE} line 2: checkpoint size 8" in errors


# ---- an older database ----------------------------------------------------------------------


@pytest.fixture
def restored(make_context: Callable[..., HubContext], tmp_path: Path) -> Path:
    """A data dir whose database was put back to a copy taken at 4 rows, after 8; the agent
    that checked in at 8 rows kept that checkpoint in `tmp_path/agent`."""
    ctx = make_context(audit_checkpoint_rows=4)
    _grow(ctx, 4)
    with sqlite3.connect(tmp_path / "old.db") as copy:
        ctx.store.read().conn.backup(copy)
    _grow(ctx, 4)
    latest = audit_checkpoints.latest_checkpoint(ctx)
    assert latest is not None and observe(tmp_path / "agent", latest, None) is None
    ctx.store.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{ctx.settings.db_path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp_path / "old.db", ctx.settings.db_path)
    return ctx.settings.data_dir


def test_a_restored_older_database_fails_against_the_checkpoints_file(restored: Path):
    expected = (
        f"{restored / CHECKPOINTS_FILE} line 2: checkpoint size 8 (time 1800000002) covers "
        "seq 8 but the log ends at seq 4: the database was rolled back"
    )
    _failed(_verify(restored), expected)


def test_a_restored_older_database_fails_against_an_agents_checkpoint(restored: Path):
    (restored / CHECKPOINTS_FILE).unlink()  # the intruder removed the hub's own record too
    assert _verify(restored).returncode == 0, "the database alone cannot tell"
    held = restored / "agent" / CHECKPOINT_FILE
    _failed(_verify(restored, "--checkpoint", str(held)), f"{held}: checkpoint size 8")


# ---- checkpoints ----------------------------------------------------------------------------


def _signed(key: Ed25519PrivateKey, data_dir: Path, size: int, root: bytes, ts: int) -> str:
    return json.dumps(sign(key, AuditKey.in_dir(data_dir).origin, size, root, ts).to_json())


def test_a_checkpoint_signed_by_another_key_is_forged(data_dir: Path):
    with _db(data_dir) as db:
        root = bytes.fromhex(_row(db, 8)["hash"])
    held = data_dir / "held.json"
    held.write_text(_signed(Ed25519PrivateKey.generate(), data_dir, 8, root, 1800000003))
    forged = f"{held}: checkpoint size 8 (time 1800000003) is not signed by this hub's audit key"
    _failed(_verify(data_dir, "--checkpoint", str(held)), forged)


def test_a_checkpoint_inconsistent_with_an_earlier_one_is_reported(data_dir: Path):
    """Signed by the hub's own key and true to the chain at its size, but newer than the
    checkpoint at size 8 while claiming 6 rows: the hub signed a rolled-back log."""
    key = AuditKey.in_dir(data_dir)
    with _db(data_dir) as db:
        root = bytes.fromhex(_row(db, 6)["hash"])
    later = key.sign(6, root, 1800000900)
    held = data_dir / "held.json"
    held.write_text(json.dumps(later.to_json()))
    result = _verify(data_dir, "--checkpoint", str(held))
    assert result.returncode == 2
    assert result.stderr == (
        "aiorch: audit: checkpoint size 6 (time 1800000900) is smaller than the earlier "
        "checkpoint size 8 (time 1800000002): the hub's audit log was rolled back\n"
    )


def test_a_malformed_checkpoint_file_is_named(data_dir: Path):
    held = data_dir / "held.json"
    held.write_text('{"origin": "aiorch/x", "size": -1}')
    _failed(
        _verify(data_dir, "--checkpoint", str(held)),
        f"{held}: not a checkpoint: size is out of range: -1",
    )


def test_json_output_names_the_problems(data_dir: Path):
    with _db(data_dir) as db:
        db.execute("DELETE FROM audit_log WHERE id = 5")
    result = _verify(data_dir, "-o", "json")
    report = json.loads(result.stdout)
    assert result.returncode == 2 and report["ok"] is False
    assert report["problems"][0] == "seq 5: missing (the chain goes from seq 4 to seq 6)"


def test_no_data_dir_is_one_line_and_status_1(tmp_path: Path):
    result = _verify(tmp_path / "nowhere")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no audit public key at" in result.stderr


# ---- a live hub -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_live_hub_signs_checkpoints_that_verify_and_refuses_a_loose_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AIORCH_JOB_INTERVAL_S", "0.2")  # the checkpoint job's period
    monkeypatch.setenv("AIORCH_AUDIT_CHECKPOINT_ROWS", "1")
    hub = HubProcess(tmp_path / "hub").start()
    try:
        with hub.client(hub.admin_token) as admin:
            make_token(admin, "viewer")
            newest = admin.get("/audit", params={"limit": 1}).json()[0]
        checkpoints = hub.data_dir / CHECKPOINTS_FILE
        wait_until(
            lambda: f'"size": {newest["id"]},' in _text(checkpoints),
            timeout=30,
            what="a checkpoint of the newest audit row",
        )
        result = _verify(hub.data_dir)
        assert result.returncode == 0 and "intact" in result.stdout, result.stderr
    finally:
        hub.stop()
    os.chmod(hub.data_dir / "audit.key", 0o644)
    with pytest.raises(UserError, match=r"audit\.key has mode 0644"):
        HubProcess(hub.data_dir).start()


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
