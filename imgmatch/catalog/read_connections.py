"""Connections of their own for snapshots: each borrowed one reads in one read transaction.

The store's own connection is shared by the threads of a process and cannot hold a read
transaction open for one check while others write through it. SQLite's WAL lets any number of
other connections each keep the state of the commit their transaction began at.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

# How long a snapshot's reader waits for a writer's lock on the database (a checkpoint).
_BUSY_TIMEOUT_MS = 30_000


class ReadConnections:
    """A pool of read-only connections to one database, lent out one transaction at a time."""

    def __init__(self, path: Path, recording: Callable[[], AbstractContextManager[None]]) -> None:
        self._path = path
        # The store's translation of SQLite's errors (and record of damage met).
        self._recording = recording
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection in a read transaction: every read through it sees the database as one
        commit left it, whatever is written meanwhile. For one thread at a time; the
        transaction ends on leaving."""
        db = self._borrow()
        try:
            with self._recording():
                db.execute("BEGIN")
            yield db
        finally:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            self._give_back(db)

    def close(self) -> None:
        """Close the idle connections; those lent out close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    def _borrow(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        with self._recording():
            # Handed between threads (a service check runs in any pool thread), never shared.
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA query_only=ON")
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        return db

    def _give_back(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(db)
                return
        db.close()
