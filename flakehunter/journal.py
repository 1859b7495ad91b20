"""Durable run state: which tiles or files are acquired, done or failed.

One SQLite file per run directory (``journal.sqlite``), written with ``synchronous=FULL`` so that a
committed row survives ``kill -9`` and power loss. Scan, detect, watch and the daemon share it: an
item is keyed by its image path (relative to the run directory for scan tiles), and an item is
``done`` only after its candidates were appended durably, so a restart neither loses nor repeats.
Detector state (e.g. a running flat-field estimate) is saved in the same transaction as the item it
depends on, so a resumed run computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import builtins
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter.errors import RuntimeFailure

PLANNED, ACQUIRED, DONE, FAILED, QUARANTINED = "planned", "acquired", "done", "failed", "quarantined"
PENDING = "pending"  # seen by the watch folder, not yet finished

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Item:
    key: str
    status: str
    data: dict[str, Any]
    updated: float


class Journal:
    """A thread-safe, crash-safe key -> status store with named state blobs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RuntimeFailure(f"{self.path}: cannot open the journal ({exc})") from exc
        self._indexed: set[str] = set()  # data fields with an index, created on first lookup

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialise access; an SQLite failure (disk full, I/O error) becomes a `RuntimeFailure` naming the file."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise RuntimeFailure(f"{self.path}: journal write failed ({exc})") from exc

    def close(self) -> None:
        with self._guard():
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so that they commit together or not at all."""
        with self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def set(self, key: str, status: str, **data: Any) -> None:
        """Record ``status`` for ``key``, merging ``data`` into what is stored."""
        with self._guard():
            row = self._db.execute("SELECT data FROM items WHERE key = ?", (key,)).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **data}
            self._db.execute(
                "INSERT INTO items (key, status, data, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status = excluded.status, data = excluded.data, "
                "updated = excluded.updated",
                (key, status, json.dumps(merged, default=_json_default), time.time()),
            )

    def get(self, key: str) -> Item | None:
        with self._guard():
            row = self._db.execute("SELECT key, status, data, updated FROM items WHERE key = ?", (key,)).fetchone()
        return Item(row[0], row[1], json.loads(row[2]), row[3]) if row else None

    def items(self, status: str | None = None) -> list[Item]:
        with self._guard():
            if status is None:
                rows = self._db.execute("SELECT key, status, data, updated FROM items ORDER BY rowid").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT key, status, data, updated FROM items WHERE status = ? ORDER BY rowid", (status,)
                ).fetchall()
        return [Item(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def keys(self, status: str) -> builtins.set[str]:  # builtins: the method `set` shadows the type here
        with self._guard():
            rows = self._db.execute("SELECT key FROM items WHERE status = ?", (status,)).fetchall()
        return {r[0] for r in rows}

    def counts(self) -> dict[str, int]:
        with self._guard():
            rows = self._db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall()
        return {status: n for status, n in rows}

    def put_state(self, name: str, state: dict[str, Any]) -> None:
        """Store a named state dict (numpy arrays and JSON values)."""
        with self._guard():
            self._db.execute(
                "INSERT INTO state (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, pack_state(state)),
            )

    def get_state(self, name: str) -> dict[str, Any] | None:
        with self._guard():
            row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return unpack_state(row[0]) if row else None

    def delete(self, key: str) -> None:
        """Forget ``key`` (e.g. a pending file that was removed before it was analysed)."""
        with self._guard():
            self._db.execute("DELETE FROM items WHERE key = ?", (key,))

    def iter_items(self, batch: int = 1000) -> Iterator[Item]:
        """Every item in insertion order, read ``batch`` rows at a time (memory stays flat)."""
        last = 0
        while True:
            with self._guard():
                rows = self._db.execute(
                    "SELECT rowid, key, status, data, updated FROM items WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield Item(r[1], r[2], json.loads(r[3]), r[4])
            last = rows[-1][0]

    def find(self, field: str, value: Any, status: str | None = None) -> list[str]:
        """Keys whose stored ``data[field]`` equals ``value`` (optionally with ``status``), oldest first.

        The first call for a field creates an index on it, so a lookup (e.g. a content hash among
        100 000 files) stays fast.
        """
        if not field.isidentifier():
            raise ValueError(f"field must be an identifier, got {field!r}")
        expr = f"json_extract(data, '$.{field}')"
        with self._guard():
            if field not in self._indexed:
                self._db.execute(f"CREATE INDEX IF NOT EXISTS items_{field} ON items({expr})")
                self._indexed.add(field)
            if status is None:
                rows = self._db.execute(f"SELECT key FROM items WHERE {expr} = ? ORDER BY rowid", (value,))
            else:
                rows = self._db.execute(
                    f"SELECT key FROM items WHERE {expr} = ? AND status = ? ORDER BY rowid", (value, status)
                )
            return [r[0] for r in rows.fetchall()]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pack_state(state: dict[str, Any]) -> bytes:
    """Serialise a dict of numpy arrays and JSON values without pickle."""
    # Any, not ndarray: mypy would also match **arrays against np.savez's allow_pickle flag.
    arrays: dict[str, Any] = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    buffer = io.BytesIO()
    np.savez(buffer, __json__=np.frombuffer(json.dumps(scalars, default=_json_default).encode(), np.uint8), **arrays)
    return buffer.getvalue()


def unpack_state(blob: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        state: dict[str, Any] = json.loads(npz["__json__"].tobytes().decode())
        state.update({k: npz[k] for k in npz.files if k != "__json__"})
    return state
