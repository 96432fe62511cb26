"""The audit log as a hash chain: each row written with the change it records (or not at all),
secrets refused, signed checkpoints every N rows or M seconds, an audit key only the hub may
read, and agents that notice when the hub shows them a log that went back."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aiorch.audit_chain import CHECKPOINTS_FILE, GENESIS, PUBLIC_KEY_FILE, row_hash
from aiorch.audit_verify import verify
from aiorch.errors import InvalidInput, UserError
from aiorch.hub.context import HubContext
from aiorch.hub.server import open_context
from aiorch.hub.services import audit, audit_checkpoints, enrollment, tokens
from aiorch.hub.services.audit_key import AuditKey
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from aiorch.hub.store.m008_audit_chain import m008_audit_chain
from aiorch.hub.store.migrations import MIGRATIONS
from edge_agent import identity
from edge_agent.contract.audit import parse_checkpoint, sign, signed_by
from edge_agent.contract.fields import ContractError
from edge_agent.witness import CHECKPOINT_FILE, observe

MakeContext = Callable[..., HubContext]


def _rows(ctx: HubContext) -> list[dict[str, Any]]:
    return list(ctx.store.read().query("SELECT * FROM audit_log ORDER BY id"))


def _add(ctx: HubContext, count: int) -> None:
    for n in range(count):
        tokens.create(ctx, f"t{n}", "user:test", role="viewer")


# ---- the chain ------------------------------------------------------------------------------


def test_every_row_carries_the_hash_of_the_one_before(make_context: MakeContext):
    ctx = make_context()
    _add(ctx, 3)
    enrollment.create_token(ctx, "edge1", 3600, 1, "user:test")
    rows = _rows(ctx)
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    prev = GENESIS
    for row in rows:
        assert row["prev_hash"] == prev.hex()
        prev = row_hash(prev, {**row, "seq": row["id"]})
        assert row["hash"] == prev.hex()


def test_a_clean_log_verifies(make_context: MakeContext):
    ctx = make_context()
    _add(ctx, 5)
    assert audit_checkpoints.checkpoint(ctx) == "signed checkpoint size 5 (time 1800000000)"
    report = verify(ctx.settings.db_path, ctx.settings.data_dir)
    assert report.problems == []
    assert (report.rows, report.checkpoints) == (5, 2), "the database's copy and the file's"


def test_m008_chains_the_rows_written_before_it(tmp_path: Path):
    path = tmp_path / "aiorch.db"
    db = sqlite_utils.Database(path)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for migration in MIGRATIONS[: MIGRATIONS.index(m008_audit_chain)]:
        migration(db)
        db.table("_migrations").insert({"name": migration.__name__, "applied_at": 0})
    for n in range(3):
        db.table("audit_log").insert({"ts": 1.5 + n, "actor": "user:old", "action": "x.y",
                                      "target": f"t:{n}", "detail": f'{{"n": {n}}}'})  # fmt: skip
    db.conn.commit()
    db.close()
    settings = HubSettings(data_dir=tmp_path)
    ctx = HubContext(store=Store(path).open(), settings=settings)
    try:
        _add(ctx, 1)
        audit_checkpoints.checkpoint(ctx)
        assert [r["actor"] for r in _rows(ctx)] == ["user:old"] * 3 + ["user:test"]
        assert verify(path, tmp_path).problems == []
    finally:
        ctx.store.close()


def test_a_failing_write_leaves_no_audit_row_and_the_chain_goes_on(make_context: MakeContext):
    ctx = make_context()
    _add(ctx, 1)

    def half_done(db: sqlite_utils.Database) -> None:
        audit.record(db, "user:test", "thing.make", "thing:1")
        raise RuntimeError("the change failed after its audit row")

    with pytest.raises(RuntimeError):
        ctx.store.write(half_done)
    assert [r["action"] for r in _rows(ctx)] == ["token.create"]
    _add(ctx, 1)
    assert [r["id"] for r in _rows(ctx)] == [1, 2]
    audit_checkpoints.checkpoint(ctx)
    assert verify(ctx.settings.db_path, ctx.settings.data_dir).problems == []


# ---- no secrets -----------------------------------------------------------------------------

BEARER = "aio_0123456789abcdef_c2VjcmV0LXNlY3JldC1zZWNyZXQ"


@pytest.mark.parametrize(
    ("detail", "target", "where"),
    [
        ({"api_token": "x"}, "t:1", "detail.api_token"),
        ({"password": "hunter2"}, "t:1", "detail.password"),
        ({"spec": {"secretEnv": {"A": "b"}}}, "t:1", "detail.spec.secretEnv"),
        ({"ssh_key": "-----BEGIN"}, "t:1", "detail.ssh_key"),
        ({"note": f"use {BEARER}"}, "t:1", "detail.note"),
        ({"hosts": ["a", BEARER]}, "t:1", "detail.hosts[1]"),
        ({}, f"inventory:{BEARER}", "entry.target"),
    ],
)
def test_secret_looking_entries_are_refused(
    make_context: MakeContext, detail: dict[str, Any], target: str, where: str
):
    ctx = make_context()
    with pytest.raises(InvalidInput, match=rf"refusing to write {re.escape(where)} \("):
        ctx.store.write(lambda db: audit.record(db, "user:test", "x.y", target, detail))
    assert _rows(ctx) == []


def test_known_safe_names_and_todays_callers_pass(make_context: MakeContext):
    ctx = make_context()
    token = enrollment.create_token(ctx, "edge1", 3600, 1, "user:test")["token"]
    csr = identity.csr_pem(identity.new_key())
    enrollment.enroll(ctx, token, csr, {"hostname": "h1"}, "1")
    _add(ctx, 1)
    enroll = [r for r in _rows(ctx) if r["action"] == "agent.enroll"]
    assert '"enrollment_token"' in enroll[0]["detail"]
    secret = token.split("_", 2)[2].partition(":")[0]
    assert all(secret not in str(row) for row in _rows(ctx))


# ---- the audit key --------------------------------------------------------------------------


def test_the_audit_key_is_0600_and_its_public_half_is_published(tmp_path: Path):
    key = AuditKey.in_dir(tmp_path)
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600
    assert (tmp_path / PUBLIC_KEY_FILE).read_bytes() == key.public_pem
    assert AuditKey.in_dir(tmp_path).origin == key.origin, "made once, then read"
    assert {p.name for p in tmp_path.iterdir()} == {"audit.key", PUBLIC_KEY_FILE}, "no temp files"


def test_processes_starting_at_once_make_one_key(tmp_path: Path):
    with ThreadPoolExecutor(8) as pool:
        origins = set(pool.map(lambda _: AuditKey.in_dir(tmp_path).origin, range(16)))
    assert len(origins) == 1


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_hub_start_refuses_a_looser_audit_key(tmp_path: Path, mode: int):
    AuditKey.in_dir(tmp_path)
    os.chmod(tmp_path / "audit.key", mode)
    with pytest.raises(UserError, match=rf"audit.key has mode {mode:04o}.*chmod 600"):
        open_context(HubSettings(data_dir=tmp_path))


# ---- checkpoints ----------------------------------------------------------------------------


def test_a_checkpoint_is_due_every_n_rows_or_m_seconds(make_context: MakeContext):
    ctx = make_context(audit_checkpoint_rows=3, audit_checkpoint_interval_s=60)
    clock: Any = ctx.clock
    assert audit_checkpoints.checkpoint(ctx) is None, "nothing to sign yet"
    assert audit_checkpoints.latest_checkpoint(ctx) is None
    _add(ctx, 1)
    assert audit_checkpoints.checkpoint(ctx) is not None, "the first rows are signed at once"
    _add(ctx, 2)
    assert audit_checkpoints.checkpoint(ctx) is None
    _add(ctx, 1)
    assert audit_checkpoints.checkpoint(ctx) == "signed checkpoint size 4 (time 1800000000)"
    _add(ctx, 1)
    clock.now += 59
    assert audit_checkpoints.checkpoint(ctx) is None
    clock.now += 1
    assert audit_checkpoints.checkpoint(ctx) == "signed checkpoint size 5 (time 1800000060)"
    clock.now += 3600
    assert audit_checkpoints.checkpoint(ctx) is None, "no new rows: nothing to sign"
    stored = list(ctx.store.read().query("SELECT size FROM audit_checkpoints ORDER BY size"))
    lines = (ctx.settings.data_dir / CHECKPOINTS_FILE).read_text().splitlines()
    assert [r["size"] for r in stored] == [1, 4, 5] and len(lines) == 3
    latest = audit_checkpoints.latest_checkpoint(ctx)
    assert latest is not None and latest["size"] == 5
    assert parse_checkpoint(latest).to_json() == latest


def test_latest_checkpoint_survives_a_restart(make_context: MakeContext, tmp_path: Path):
    ctx = make_context()
    _add(ctx, 2)
    audit_checkpoints.checkpoint(ctx)
    before = audit_checkpoints.latest_checkpoint(ctx)
    ctx.store.close()
    again = open_context(HubSettings(data_dir=tmp_path))
    try:
        assert audit_checkpoints.latest_checkpoint(again) == before
    finally:
        again.store.close()


def test_the_hub_refuses_to_sign_over_a_restored_database(make_context: MakeContext):
    ctx = make_context(audit_checkpoint_rows=1)
    _add(ctx, 2)
    audit_checkpoints.checkpoint(ctx)
    old = ctx.settings.data_dir / "old.db"
    with sqlite3.connect(old) as copy:
        ctx.store.read().conn.backup(copy)
    _add(ctx, 2)
    audit_checkpoints.checkpoint(ctx)
    ctx.store.close()
    os.replace(old, ctx.settings.db_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{ctx.settings.db_path}{suffix}").unlink(missing_ok=True)
    restored = make_context(audit_checkpoint_rows=1)
    _add(restored, 3)
    result = audit_checkpoints.checkpoint(restored)
    assert result is not None and result.startswith("not signing: the database no longer ")
    sizes = [r["size"] for r in restored.store.read().query("SELECT size FROM audit_checkpoints")]
    assert sizes == [2], "nothing signed that contradicts checkpoint size 4"


def test_the_checkpoint_is_a_c2sp_signed_note():
    key = Ed25519PrivateKey.generate()
    checkpoint = sign(key, "aiorch/0011223344556677", 7, bytes(range(32)), 1800000000)
    root = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    body = f"aiorch/0011223344556677\n7\n{root}\ntime 1800000000\n"
    assert checkpoint.note_text().decode() == body
    assert (
        checkpoint.signed_note()
        == f"{body}\n\u2014 aiorch/0011223344556677 {checkpoint.signature}\n"
    )
    assert signed_by(checkpoint, key.public_key())
    assert not signed_by(checkpoint, Ed25519PrivateKey.generate().public_key())
    bad_fields = [
        ({"size": 0}, "size"),
        ({"root": "AAAA"}, "root"),
        ({"signature": "!!"}, "signature"),
        ({"origin": "a b"}, "origin"),
    ]
    for bad, field in bad_fields:
        with pytest.raises(ContractError, match=field):
            parse_checkpoint({**checkpoint.to_json(), **bad})


# ---- the agent as witness -------------------------------------------------------------------


@pytest.fixture
def hub_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _cp(key: Ed25519PrivateKey, size: int, fill: int = 1, ts: int = 1800000000) -> dict[str, Any]:
    return sign(key, "aiorch/hub", size, bytes([fill]) * 32, ts).to_json()


def test_the_witness_keeps_the_newest_checkpoint(tmp_path: Path, hub_key: Ed25519PrivateKey):
    pem = _pem(hub_key)
    assert observe(tmp_path, _cp(hub_key, 5), pem) is None
    assert observe(tmp_path, _cp(hub_key, 9, fill=2), pem) is None
    assert observe(tmp_path, _cp(hub_key, 9, fill=2, ts=1800000600), None) is None
    held = tmp_path / CHECKPOINT_FILE
    assert parse_checkpoint(json.loads(held.read_text())).size == 9
    assert stat.S_IMODE(held.stat().st_mode) == 0o600


def test_the_witness_reports_a_rolled_back_hub(tmp_path: Path, hub_key: Ed25519PrivateKey):
    pem = _pem(hub_key)
    observe(tmp_path, _cp(hub_key, 9), pem)
    problem = observe(tmp_path, _cp(hub_key, 4, ts=1800000600), pem)
    assert problem is not None and "smaller than the earlier checkpoint size 9" in problem
    assert "rolled back" in problem and "\n" not in problem
    rewritten = observe(tmp_path, _cp(hub_key, 9, fill=7), pem)
    assert rewritten is not None and "another root" in rewritten and "rewritten" in rewritten
    assert observe(tmp_path, _cp(hub_key, 4), pem) is not None, "still held: size 9"


def test_the_witness_refuses_what_the_hub_did_not_sign(tmp_path: Path, hub_key: Ed25519PrivateKey):
    forged = _cp(Ed25519PrivateKey.generate(), 20)
    problem = observe(tmp_path, forged, _pem(hub_key))
    assert (
        problem
        == "the hub's audit checkpoint size 20 (time 1800000000) is not signed by its audit key"
    )
    assert observe(tmp_path, {"size": "x"}, None) is not None
    assert not (tmp_path / CHECKPOINT_FILE).exists()
