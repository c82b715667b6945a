"""The machine's limit for the work each hybridstore operation must do, measured raw.

No validation, no locks, no intents: just the system calls and the SQLite statement the
operation cannot avoid, on the same disk and against a copy of the same sidecar table
(same schema, same indexes, same number of rows), with the sidecar's settings (WAL,
``synchronous=NORMAL``):

- durable save: temp file write + fsync + rename + directory fsync + one SQLite commit;
- transition: the same into the new status directory, plus unlink + fsync of the old one;
- point read: one indexed SQLite lookup + reading and parsing (``json.loads``) one file;
- read one file: open, read and ``json.loads`` a job file (the per-job cost an unlimited
  query would pay if it read files);
- reindex: list and read every file, ``json.loads`` it, one batched insert of all rows
  into an empty table with the sidecar's schema, one commit;
- claim: a rename between two directories, an fsync of both, one SQLite commit.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybridstore.migrations import load_migrations

__all__ = [
    "LIMIT_PREFIX",
    "STATUS_DIRS",
    "LimitReader",
    "LimitWriter",
    "connect",
    "create_schema",
    "fsync_dir",
    "limit_name",
    "limit_reindex",
    "read_file",
    "row_values",
]

STATUS_DIRS = ("pending", "processing", "completed", "failed", "timeout", "cancelled")
_UPSERT = (
    "INSERT OR REPLACE INTO jobs (id, status, content_type, worker_id, ingestion_task_id,"
    " created_us, timeout_us, finished_us, version, size, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def connect(path: Path) -> sqlite3.Connection:
    """A connection configured like the sidecar's: WAL, synchronous=NORMAL, autocommit."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """The sidecar's tables and indexes, from hybridstore's own migration files."""
    for migration in load_migrations("sidecar"):
        conn.executescript(migration.sql)


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: str | Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _us(text: str | None) -> int | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def row_values(obj: dict[str, Any], body: bytes, written_us: int | None = None) -> tuple[Any, ...]:
    """The sidecar row of a parsed job body."""
    finished = _us(obj.get("completed_at"))
    if finished is None:
        finished = written_us or 0
    return (
        obj["id"],
        obj["status"],
        obj["content_type"],
        obj.get("worker_id"),
        obj["ingestion_task_id"],
        _us(obj["created_at"]),
        _us(obj.get("timeout_at")),
        finished,
        obj.get("version", 0),
        len(body),
        body,
    )


def _write_durable(directory: Path, name: str, body: bytes) -> None:
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    fsync_dir(directory)


# Files the limit lines write into a store's status directories are named with this prefix:
# the directories are the store's own (their size is part of the cost of a create, a rename
# or an unlink), and the store sees these names as foreign entries, never as jobs.
LIMIT_PREFIX = "_limit-"


def limit_name(job_id: str) -> str:
    return f"{LIMIT_PREFIX}{job_id}.json"


class LimitWriter:
    """Durable saves and transitions at the machine's limit (files + one commit), in the
    status directories of ``root`` (a work copy of the store of the size measured)."""

    def __init__(self, root: Path, sidecar_copy: Path) -> None:
        self.root = root
        for name in STATUS_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
        self.conn = connect(sidecar_copy)

    def _commit(self, row: tuple[Any, ...]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(_UPSERT, row)
        self.conn.execute("COMMIT")

    def add(self, job_id: str, body: bytes, row: tuple[Any, ...]) -> None:
        _write_durable(self.root / row[1], limit_name(job_id), body)
        self._commit(row)

    def transition(self, job_id: str, old_status: str, body: bytes, row: tuple[Any, ...]) -> None:
        _write_durable(self.root / row[1], limit_name(job_id), body)
        old = self.root / old_status
        os.unlink(old / limit_name(job_id))
        fsync_dir(old)
        self._commit(row)

    def close(self) -> None:
        self.conn.close()


class LimitReader:
    """Point reads at the machine's limit: one indexed lookup, one file read and parse."""

    def __init__(self, data_dir: Path, sidecar: Path) -> None:
        self.data_dir = str(data_dir)
        self.conn = sqlite3.connect(f"file:{sidecar}?mode=ro", uri=True, isolation_level=None,
                                    check_same_thread=False)

    def get(self, job_id: str) -> dict[str, Any]:
        (status,) = self.conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(read_file(f"{self.data_dir}/{status}/{job_id}.json"))  # type: ignore[no-any-return]

    def by_task(self, task_id: str) -> dict[str, Any]:
        job_id, status = self.conn.execute(
            "SELECT id, status FROM jobs WHERE ingestion_task_id = ?"
            " ORDER BY created_us DESC, id DESC LIMIT 1",
            (task_id,),
        ).fetchone()
        return json.loads(read_file(f"{self.data_dir}/{status}/{job_id}.json"))  # type: ignore[no-any-return]

    def read_one(self, path: str) -> dict[str, Any]:
        return json.loads(read_file(path))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.conn.close()


def limit_reindex(data_dir: Path, db_path: Path) -> int:
    """Read and parse every job file, insert all rows in one batch into a fresh table."""
    rows = []
    for status in STATUS_DIRS:
        with os.scandir(data_dir / status) as entries:
            for entry in entries:
                name = entry.name
                if not name.endswith(".json") or name.startswith("."):
                    continue
                body = read_file(entry.path)
                obj = json.loads(body)
                written = None
                if obj.get("completed_at") is None:
                    written = entry.stat(follow_symlinks=False).st_mtime_ns // 1000
                rows.append(row_values(obj, body, written))
    conn = connect(db_path)
    try:
        create_schema(conn)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_UPSERT, rows)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(rows)
