"""The store: migrations once, all writes through one thread, failures isolated, WAL reads."""

from __future__ import annotations

import ast
import asyncio
import re
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils
import uvicorn

from aiorch.deploy import load_spec, template_hash
from aiorch.endpoint import CA_FILE
from aiorch.errors import Unavailable, UserError
from aiorch.hub.app import create_app
from aiorch.hub.connections import ConnectionLimits, protocol_class
from aiorch.hub.context import HubContext
from aiorch.hub.pki.listener import Listener, listen_names
from aiorch.hub.process import free_port
from aiorch.hub.services import enrollment
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store, migrations
from aiorch.hub.store.migrations import MIGRATIONS, _m004_template_hash, apply_migrations
from aiorch.wait import wait_until
from edge_agent import identity
from tests.fixtures_hub import AgentCert, enroll_request, tls_context


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "hub.db").open()
    yield s
    s.close()


def test_migrations_apply_once(store: Store):
    assert apply_migrations(store.read().__class__(sqlite3.connect(store.path))) == []
    names = [r["name"] for r in store.read().query("SELECT name FROM _migrations")]
    assert names == [m.__name__ for m in MIGRATIONS]


def test_database_is_in_wal_mode(store: Store):
    assert store.read().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_all_writes_run_on_the_single_writer_thread(store: Store):
    seen: set[str] = set()

    def op(n: int):
        def write(db):
            seen.add(threading.current_thread().name)
            db.execute("INSERT INTO sites (name, created_at) VALUES (?, 0)", [f"s{n}"])

        return write

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: store.write(op(n)), range(50)))
    assert seen == {"aiorch-store-writer"}
    assert store.read().execute("SELECT COUNT(*) FROM sites").fetchone()[0] == 50


def test_failing_write_does_not_undo_its_neighbours(store: Store):
    def good(name):
        return lambda db: db.execute("INSERT INTO sites (name, created_at) VALUES (?, 0)", [name])

    def bad(db):
        db.execute("INSERT INTO sites (name, created_at) VALUES ('half', 0)")
        raise ValueError("boom")

    futures = [store.submit(good("a")), store.submit(bad), store.submit(good("b"))]
    futures[0].result()
    with pytest.raises(ValueError):
        futures[1].result()
    futures[2].result()
    names = {r["name"] for r in store.read().query("SELECT name FROM sites")}
    assert names == {"a", "b"}, "the failed op's half-write is rolled back, the others kept"


def test_reads_see_committed_writes_from_other_threads(store: Store):
    store.write(lambda db: db.execute("INSERT INTO sites (name, created_at) VALUES ('x', 0)"))
    result: list[int] = []
    t = threading.Thread(
        target=lambda: result.append(
            store.read().execute("SELECT COUNT(*) FROM sites").fetchone()[0]
        )
    )
    t.start()
    t.join()
    assert result == [1]


def test_read_connections_cannot_write(store: Store):
    with pytest.raises(sqlite3.OperationalError):
        store.read().execute("INSERT INTO sites (name, created_at) VALUES ('y', 0)")


def test_data_survives_reopen(tmp_path: Path):
    s = Store(tmp_path / "hub.db").open()
    s.write(lambda db: db.execute("INSERT INTO sites (name, created_at) VALUES ('keep', 0)"))
    s.close()
    s2 = Store(tmp_path / "hub.db").open()
    assert [r["name"] for r in s2.read().query("SELECT name FROM sites")] == ["keep"]
    s2.close()


def test_a_store_closed_and_opened_again_reads_again(tmp_path: Path):
    """close() closes the readers; the thread that read before must get a fresh one."""
    s = Store(tmp_path / "hub.db").open()
    assert s.read().execute("SELECT COUNT(*) FROM sites").fetchone()[0] == 0
    s.close()
    s.open()
    s.write(lambda db: db.execute("INSERT INTO sites (name, created_at) VALUES ('back', 0)"))
    assert [r["name"] for r in s.read().query("SELECT name FROM sites")] == ["back"]
    s.close()


def _insert_site(name: str):
    return lambda db: db.execute("INSERT INTO sites (name, created_at) VALUES (?, 0)", [name])


def _sites(store: Store) -> set[str]:
    return {r["name"] for r in store.read().query("SELECT name FROM sites")}


def _hold_writer(store: Store) -> threading.Event:
    """Keep the writer busy with one write (as a slow one would) until the event is set."""
    started, release = threading.Event(), threading.Event()

    def hold(db):
        started.set()
        assert release.wait(10), "the test never released the writer"

    store.submit(hold)
    assert started.wait(5)
    return release


def test_cancelled_waiter_neither_kills_the_writer_nor_writes(store: Store):
    release = _hold_writer(store)

    async def give_up() -> None:  # e.g. a client that stopped waiting
        await asyncio.wait_for(store.awrite(_insert_site("abandoned")), timeout=0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(give_up())
    release.set()
    store.submit(_insert_site("after")).result(timeout=5)
    assert _sites(store) == {"after"}, "the cancelled write never ran, the next one did"
    assert store.health() is None


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), asyncio.CancelledError()])
def test_op_raising_a_base_exception_fails_only_that_op(store: Store, error: BaseException):
    def bad(db):
        db.execute("INSERT INTO sites (name, created_at) VALUES ('half', 0)")
        raise error

    futures = [store.submit(_insert_site("a")), store.submit(bad), store.submit(_insert_site("b"))]
    futures[0].result(timeout=5)
    with pytest.raises(RuntimeError, match=type(error).__name__):
        futures[1].result(timeout=5)
    futures[2].result(timeout=5)
    store.submit(_insert_site("later")).result(timeout=5)
    assert _sites(store) == {"a", "b", "later"}
    assert store.health() is None


def test_write_that_cannot_start_in_time_is_503_and_never_runs(tmp_path: Path):
    store = Store(tmp_path / "hub.db", write_timeout_s=0.2).open()
    release = _hold_writer(store)
    with pytest.raises(Unavailable, match=r"did not start this write within 0\.2 s; nothing"):
        store.write(_insert_site("late"))
    release.set()
    store.write(_insert_site("next"))
    assert _sites(store) == {"next"}
    store.close()


def test_full_write_queue_is_refused_and_what_it_accepted_is_kept(tmp_path: Path):
    store = Store(tmp_path / "hub.db", max_pending=2).open()
    release = _hold_writer(store)
    accepted = [store.submit(_insert_site("q1")), store.submit(_insert_site("q2"))]
    with pytest.raises(Unavailable, match="2 writes waiting") as refused:
        store.submit(_insert_site("q3"))
    assert refused.value.status_code == 503 and refused.value.retry_after >= 1
    release.set()
    for future in accepted:
        future.result(timeout=5)
    assert _sites(store) == {"q1", "q2"}
    store.close()


def test_stuck_writer_makes_the_store_unhealthy_until_it_moves(tmp_path: Path):
    store = Store(tmp_path / "hub.db", stuck_after_s=0.05).open()
    release = _hold_writer(store)
    wait_until(lambda: store.health() is not None, timeout=5, what="store reported stuck")
    assert "writer is stuck" in (store.health() or "")
    release.set()
    store.write(_insert_site("moving"))
    assert store.health() is None
    store.close()


def test_dead_writer_fails_writes_at_once_and_makes_the_store_unhealthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(Store, "_write_loop", lambda self, db: db.close())  # a writer that ended
    store = Store(tmp_path / "hub.db").open()
    wait_until(lambda: store.health() is not None, timeout=5, what="dead writer noticed")
    assert store.health() == "the store's writer thread has stopped"
    with pytest.raises(Unavailable, match="writer has stopped"):
        store.write(_insert_site("never"))
    store.close()


def test_writer_commits_with_synchronous_full(store: Store):
    """An acknowledged write survives a power loss: the WAL is synced at every commit."""
    assert store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2


def test_snapshot_reads_one_committed_state(store: Store):
    with store.snapshot() as db:
        before = db.execute("SELECT COUNT(*) FROM sites").fetchone()[0]
        store.write(_insert_site("meanwhile"))
        assert db.execute("SELECT COUNT(*) FROM sites").fetchone()[0] == before
    assert store.read().execute("SELECT COUNT(*) FROM sites").fetchone()[0] == before + 1


@contextmanager
def serving(ctx: HubContext, tls: bool = False) -> Iterator[str]:
    """The hub app on `ctx` under a real uvicorn, in this process so the test owns its store;
    with `tls`, over HTTPS as the hub serves it (agents present their certificate), else over
    plain HTTP, which needs no CA and so works with a dead writer."""
    port = free_port()
    tls_options: dict[str, Any] = {}
    scheme = "http"
    if tls:
        ctx.listener = Listener(ctx.settings.data_dir, listen_names(["127.0.0.1"], []))
        ctx.listener.ensure(ctx.authority, ctx.clock())
        context = ctx.listener.context(ctx.authority)
        limits = ConnectionLimits(max_connections=64)
        tls_options = {"ssl_context_factory": lambda *_: context, "http": protocol_class(limits)}
        scheme = "https"
    config = uvicorn.Config(
        create_app(ctx, run_jobs=False),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",  # no start-up writes: a test may start it with its writer dead
        **tls_options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, what="uvicorn to start")
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _context(tmp_path: Path, store: Store) -> HubContext:
    return HubContext(store=store.open(), settings=HubSettings(data_dir=tmp_path))


def _batch(epoch: str, first: int, count: int = 10) -> dict:
    samples = [[first + i, 1_800_000_000.0 + i, 0, float(i)] for i in range(count)]
    series = [{"metric": "gpu_utilization_percent", "labels": {"gpu": "0"}}]
    return {"epoch": epoch, "seq_start": first, "seq_end": first + count - 1,
            "series": series, "samples": samples}  # fmt: skip


@pytest.mark.e2e
def test_healthz_is_503_while_the_writer_is_stuck_and_200_once_it_moves(tmp_path: Path):
    ctx = _context(tmp_path, Store(tmp_path / "hub.db", stuck_after_s=0.05))
    with serving(ctx) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        release = _hold_writer(ctx.store)
        answer = wait_until(
            lambda: (r := httpx.get(f"{url}/healthz")).status_code == 503 and r,
            timeout=5,
            what="/healthz to turn 503",
        )
        assert "writer is stuck" in answer.json()["detail"]
        release.set()
        ctx.store.write(_insert_site("moving"))
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ctx.store.close()


@pytest.mark.e2e
def test_healthz_is_503_when_the_writer_is_dead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(Store, "_write_loop", lambda self, db: db.close())
    ctx = _context(tmp_path, Store(tmp_path / "hub.db"))
    with serving(ctx) as url:
        answer = wait_until(
            lambda: (r := httpx.get(f"{url}/healthz")).status_code == 503 and r,
            timeout=5,
            what="/healthz to turn 503",
        )
    assert answer.json()["detail"] == "the store's writer thread has stopped"
    ctx.store.close()


@pytest.mark.e2e
def test_full_write_queue_answers_agents_503_with_retry_after_and_loses_nothing(tmp_path: Path):
    ctx = _context(tmp_path, Store(tmp_path / "hub.db", max_pending=2))
    token = enrollment.create_token(ctx, "edge1", 3600, 1, "user:t")["token"]
    key, body = enroll_request(token, "h1")
    agent = enrollment.enroll(ctx, token, body["csr"], body["facts"], "1")
    saved = identity.save(tmp_path / identity.IDENTITY_FILE, key, agent["certificate"])
    verify = tls_context(tmp_path / CA_FILE, AgentCert(saved.path, agent["agent_id"]))
    with (
        serving(ctx, tls=True) as url,
        httpx.Client(
            base_url=f"{url}/api/v1/agents/{agent['agent_id']}", verify=verify, timeout=30
        ) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        release = _hold_writer(ctx.store)
        queued = [pool.submit(client.post, "/telemetry", json=_batch("e", n * 10)) for n in (0, 1)]
        wait_until(lambda: ctx.store.pending_writes == 2, timeout=10, what="two queued batches")
        refused = client.post("/telemetry", json=_batch("e", 20))
        checkin = {"agent_version": "t", "uptime_s": 1.0, "facts_hash": "x",
                   "applied_revision": 0, "facts": {"hostname": "h1"}}  # fmt: skip
        refused_checkin = client.post("/checkin", json=checkin)
        release.set()
        assert [f.result(timeout=10).status_code for f in queued] == [200, 200]
        assert client.post("/telemetry", json=_batch("e", 20)).status_code == 200
    for answer in (refused, refused_checkin):
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
        assert "writes waiting" in answer.json()["detail"]
    stored = ctx.store.read().execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    assert stored == 30, "every batch the hub accepted or acknowledged is stored"
    ctx.store.close()


OLD_SPEC = """\
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {name: chat, project: nlp}
spec:
  image: localhost/aiorch-model:v1
  command: [serve, 8]
  env: {WORKERS: 4, DEBUG: true, RATIO: 0.5}
  secretEnv: {TOKEN: 1234}
  ports: [{containerPort: 8080, hostPort: 18080}, {containerPort: 9090, protocol: UDP}]
  volumes: [{hostPath: /srv/models, mountPath: /models, readOnly: true}]
  resources: {gpus: 1, gpuProduct: H100, cpu: 2, memoryMiB: 4096}
  replicas: 2
  healthCheck: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 5}
"""


def _database_before_m004(path: Path) -> sqlite_utils.Database:
    """A database as a hub of the release before rollouts left it: YAML specs, no revisions."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for migration in MIGRATIONS[:3]:
        migration(db)
        db.table("_migrations").insert({"name": migration.__name__, "applied_at": 0})
    db.execute(
        "INSERT INTO deployments VALUES ('chat', 'nlp', ?, 'old-hash', 1, 'user:t', 5.0)",
        [OLD_SPEC],
    )
    db.conn.commit()
    return db


def test_m004_gives_old_deployments_their_first_revision_without_domain_code(tmp_path: Path):
    db = _database_before_m004(tmp_path / "old.db")
    assert "m004_rollouts" in apply_migrations(db)
    (row,) = db.query("SELECT * FROM deployment_revisions")
    assert (row["deployment"], row["revision"], row["spec"]) == ("chat", 1, OLD_SPEC)
    # The hash the replicas of that release were made with, frozen here as m004 is.
    assert row["template_hash"] == (
        "354477ca54e83465c4663ac9c15eac25904a423c503deddb4aa0e3b6b9079392"
    )


def test_m004_hash_matches_todays_template_hash_for_every_example():
    specs = [OLD_SPEC, *(p.read_text() for p in Path("examples/deployments").glob("*.yaml"))]
    for text in specs:
        assert _m004_template_hash(text) == template_hash(load_spec(text))


def test_migrations_import_no_domain_code():
    """A later release may change aiorch.deploy; an old database must still migrate."""
    folder = Path(migrations.__file__).parent
    own = re.compile(r"^aiorch\.hub\.store\.m\d{3}_\w+$")  # migrations in their own modules
    for path in [folder / "migrations.py", *folder.glob("m[0-9][0-9][0-9]_*.py")]:
        imported = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]
        domain = [n for n in imported if n and n.startswith("aiorch") and not own.match(n)]
        assert not domain, (path.name, domain)


def test_store_sync_mode_is_a_setting_and_a_wrong_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert HubSettings(data_dir=tmp_path).store_synchronous == "FULL"
    monkeypatch.setenv("AIORCH_STORE_SYNCHRONOUS", "normal")
    assert HubSettings(data_dir=tmp_path).store_synchronous == "NORMAL"
    monkeypatch.setenv("AIORCH_STORE_SYNCHRONOUS", "off")
    with pytest.raises(UserError, match="must be FULL or NORMAL, not 'OFF'"):
        HubSettings(data_dir=tmp_path)


def test_write_from_inside_a_write_is_refused_at_once(store: Store):
    def nested(db):
        store.write(_insert_site("inner"))

    with pytest.raises(RuntimeError, match="from inside a write operation"):
        store.submit(nested).result(timeout=5)
    assert store.health() is None and _sites(store) == set()
