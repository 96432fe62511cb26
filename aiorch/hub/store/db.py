"""The hub's SQLite store.

Every write goes through one writer thread that drains a queue and commits
several operations in one transaction (group commit), each in its own
savepoint so one failing operation does not undo its neighbours. Reads use a
connection per thread and run concurrently thanks to WAL.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from aiorch.hub.store.migrations import apply_migrations

T = TypeVar("T")
WriteOp = Callable[[sqlite_utils.Database], Any]

_BUSY_TIMEOUT_MS = 10_000
_MAX_GROUP = 512


def _connect(path: Path, *, readonly: bool) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    else:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    return sqlite_utils.Database(conn, execute_plugins=False)


class Store:
    """Owns the database file; `write()` for mutations, `read()` for queries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._queue: queue.Queue[tuple[WriteOp, Future[Any]] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._readers: list[sqlite_utils.Database] = []
        self._readers_lock = threading.Lock()

    def open(self) -> Store:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path, readonly=False)
        apply_migrations(db)
        self._writer = threading.Thread(
            target=self._write_loop, args=(db,), name="aiorch-store-writer", daemon=True
        )
        self._writer.start()
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()

    def read(self) -> sqlite_utils.Database:
        """A read-only connection owned by the calling thread."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path, readonly=True)
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def write(self, op: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `op` on the writer thread inside a transaction; return its result once committed."""
        return self.submit(op).result()

    async def awrite(self, op: Callable[[sqlite_utils.Database], T]) -> T:
        """`write()` for async code: waits without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(op))

    def submit(self, op: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        if self._writer is None:
            raise RuntimeError("store is not open")
        future: Future[T] = Future()
        self._queue.put((op, future))
        return future

    @property
    def pending_writes(self) -> int:
        return self._queue.qsize()

    def _write_loop(self, db: sqlite_utils.Database) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < _MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(db, batch)
        db.close()

    @staticmethod
    def _run_batch(db: sqlite_utils.Database, batch: list[tuple[WriteOp, Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            db.conn.execute("BEGIN IMMEDIATE")
            for op, future in batch:
                try:
                    with db.atomic():
                        outcomes.append((future, op(db), None))
                except Exception as exc:
                    outcomes.append((future, None, exc))
            db.conn.execute("COMMIT")
        except Exception as exc:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            for _, future in batch:
                future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
