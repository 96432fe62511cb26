"""The hub's SQLite store.

Every write goes through one writer thread that drains a bounded queue and commits several
operations in one transaction (group commit), each in its own savepoint so one failing
operation does not undo its neighbours. Commits are `synchronous=FULL` by default: an
acknowledged write (a telemetry batch, a check-in's facts) survives a power loss, and group
commit spreads the fsync over the batch. Reads use a connection per thread and run
concurrently thanks to WAL.

The writer must never die silently: an operation that raises anything, or a waiter that
gives up, fails only that operation; `health()` says when the writer is gone or stuck.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlite_utils

from aiorch.errors import Unavailable
from aiorch.hub.store.migrations import apply_migrations

T = TypeVar("T")
WriteOp = Callable[[sqlite_utils.Database], Any]
Synchronous = Literal["FULL", "NORMAL"]
_Item = tuple[WriteOp, Future[Any], float]  # the op, its waiter, when it was queued

log = logging.getLogger("aiorch.hub.store")

_BUSY_TIMEOUT_MS = 10_000
_MAX_GROUP = 512


def _connect(path: Path, *, readonly: bool, synchronous: Synchronous) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    else:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    return sqlite_utils.Database(conn, execute_plugins=False)


def _rollback(db: sqlite_utils.Database) -> None:
    if db.conn.in_transaction:
        try:
            db.conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("store writer: ROLLBACK failed")


def _as_error(exc: BaseException) -> BaseException:
    """What a waiter receives: SystemExit or CancelledError from an operation must not stop
    the caller's thread or look like the caller's own cancellation."""
    if isinstance(exc, Exception):
        return exc
    error = RuntimeError(f"the write operation raised {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _timed_out(future: Future[Any], timeout_s: float) -> Unavailable:
    """The 503 for a write that did not finish in time; cancelled if it has not started."""
    if future.cancel():
        return Unavailable(f"the store did not start this write within {timeout_s:g} s; "
                           "nothing was written, retry later")  # fmt: skip
    return Unavailable(f"the store is still applying this write after {timeout_s:g} s; "
                       "it may yet complete")  # fmt: skip


class Store:
    """Owns the database file; `write()` for mutations, `read()` for queries."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = 1024,
        write_timeout_s: float = 30.0,
        stuck_after_s: float = 10.0,
        synchronous: Synchronous = "FULL",
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.write_timeout_s = write_timeout_s
        self.stuck_after_s = stuck_after_s
        self.synchronous = synchronous
        self._local = threading.local()
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_pending)
        self._writer: threading.Thread | None = None
        self._batch_queued_at: float | None = None  # oldest write of the batch being applied
        self._readers: list[sqlite_utils.Database] = []
        self._readers_lock = threading.Lock()

    def open(self) -> Store:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path, readonly=False, synchronous=self.synchronous)
        apply_migrations(db)
        self._writer = threading.Thread(
            target=self._write_loop, args=(db,), name="aiorch-store-writer", daemon=True
        )
        self._writer.start()
        return self

    def close(self) -> None:
        if self._writer is not None:
            if self._writer.is_alive():
                self._queue.put(None)
                self._writer.join()
            self._writer = None
        self._fail_queued(Unavailable("the store was closed before this write ran"))
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
        self._local = threading.local()  # a reopened store opens fresh readers

    def read(self) -> sqlite_utils.Database:
        """A read-only connection owned by the calling thread."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path, readonly=True, synchronous=self.synchronous)
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    @contextmanager
    def snapshot(self) -> Iterator[sqlite_utils.Database]:
        """`read()` inside one read transaction: every query sees the same committed state."""
        db = self.read()
        db.conn.execute("BEGIN")
        try:
            yield db
        finally:
            db.conn.execute("COMMIT")

    def write(self, op: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `op` on the writer thread inside a transaction; return its result once
        committed, or raise `Unavailable` (503) when the queue is full or it takes too long."""
        if threading.current_thread() is self._writer:  # it would wait on itself
            raise RuntimeError("write() called from inside a write operation; use its db")
        future = self.submit(op)
        if not wait([future], self.write_timeout_s).done:
            raise _timed_out(future, self.write_timeout_s)
        return future.result()

    async def awrite(self, op: Callable[[sqlite_utils.Database], T]) -> T:
        """`write()` for async code: waits without blocking the event loop. A cancelled
        waiter cancels its write if it has not started (and never harms the writer)."""
        future = self.submit(op)
        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait([waiter], timeout=self.write_timeout_s)
        except asyncio.CancelledError:
            future.cancel()
            raise
        if not done:
            error = _timed_out(future, self.write_timeout_s)
            waiter.cancel()
            raise error
        return waiter.result()

    def submit(self, op: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        if self._writer is None:
            raise RuntimeError("store is not open")
        if not self._writer.is_alive():
            raise Unavailable("the store's writer has stopped; the hub needs a restart")
        future: Future[T] = Future()
        try:
            self._queue.put_nowait((op, future, time.monotonic()))
        except queue.Full:
            raise Unavailable(
                f"the store has {self.max_pending} writes waiting; retry shortly"
            ) from None
        return future

    @property
    def pending_writes(self) -> int:
        return self._queue.qsize()

    def health(self) -> str | None:
        """Why the store cannot take writes now (writer gone, or a write waiting longer than
        `stuck_after_s`), or None when it can."""
        if self._writer is None:
            return "the store is closed"
        if not self._writer.is_alive():
            return "the store's writer thread has stopped"
        queued_at = self._batch_queued_at
        if queued_at is not None and time.monotonic() - queued_at > self.stuck_after_s:
            waited = time.monotonic() - queued_at
            return f"the store's writer is stuck: a write has waited {waited:.0f} s"
        return None

    def _next_batch(self) -> tuple[list[_Item], bool]:
        """Up to _MAX_GROUP queued writes, and whether close() asked the writer to stop."""
        item = self._queue.get()
        if item is None:
            return [], True
        batch = [item]
        while len(batch) < _MAX_GROUP:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _write_loop(self, db: sqlite_utils.Database) -> None:
        try:
            stop = False
            while not stop:
                batch, stop = self._next_batch()
                if not batch:
                    continue
                self._batch_queued_at = batch[0][2]
                try:
                    self._run_batch(db, [(op, future) for op, future, _ in batch])
                except BaseException as exc:  # the writer outlives anything a batch does
                    log.exception("store writer: a batch failed outside its operations")
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(_as_error(exc))
                finally:
                    self._batch_queued_at = None
        finally:
            db.close()

    @staticmethod
    def _run_batch(db: sqlite_utils.Database, batch: list[tuple[WriteOp, Future[Any]]]) -> None:
        # A waiter that was cancelled before its turn gives up its write.
        live = [(op, future) for op, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            db.conn.execute("BEGIN IMMEDIATE")
            for op, future in live:
                try:
                    with db.atomic():
                        outcomes.append((future, op(db), None))
                except BaseException as exc:
                    outcomes.append((future, None, _as_error(exc)))
            db.conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(db)
            for _, future in live:
                future.set_exception(_as_error(exc))
            return
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(error)
