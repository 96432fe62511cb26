"""The store: migrations once, all writes through one thread, failures isolated, WAL reads."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aiorch.hub.store import Store
from aiorch.hub.store.migrations import MIGRATIONS, apply_migrations


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
