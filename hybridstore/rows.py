"""The sidecar's rows: what one row holds of a job, and the SQL that writes them.

A row keeps the fields queries filter and sort on, with times as integer microseconds
since the epoch (exact and sortable), and a copy of the body, so set queries never open
one file per job. The writes here run inside the caller's transaction.
"""

from __future__ import annotations

import gc
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .logs import get_logger
from .model import RemoteJob

log = get_logger("hybridstore")

__all__ = [
    "FILTER_COLUMNS",
    "CountChanges",
    "Row",
    "counts_match",
    "drop_row",
    "key_holder",
    "put_rows",
    "recount",
    "replace_all_rows",
    "row_for",
    "row_matches",
    "rows_of",
    "to_us",
    "where_clause",
    "write_row",
]

FILTER_COLUMNS = ("status", "content_type", "worker_id", "ingestion_task_id")


def to_us(value: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact, sortable)."""
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Row:
    """A job's index row."""

    id: str
    status: str
    content_type: str
    worker_id: str | None
    ingestion_task_id: str
    created_us: int
    timeout_us: int | None
    finished_us: int
    version: int
    size: int
    body: bytes
    priority: int = 0
    not_before_us: int | None = None
    unique_key: str | None = None


def row_for(job: RemoteJob, body: bytes, written_us: int) -> Row:
    """The row describing ``job`` stored as ``body``, last written at ``written_us``."""
    return Row(
        id=job.id,
        status=job.status.value,
        content_type=job.content_type,
        worker_id=job.worker_id,
        ingestion_task_id=job.ingestion_task_id,
        created_us=to_us(job.created_at),
        timeout_us=to_us(job.timeout_at) if job.timeout_at else None,
        finished_us=to_us(job.completed_at) if job.completed_at else written_us,
        version=job.version,
        size=len(body),
        body=body,
        priority=job.priority,
        not_before_us=to_us(job.not_before) if job.not_before else None,
        unique_key=job.unique_key,
    )


# Indexed columns a write may change (id never does; the rest are always written).
_CHANGEABLE = (
    "status",
    "content_type",
    "worker_id",
    "ingestion_task_id",
    "created_us",
    "timeout_us",
    "priority",
    "not_before_us",
    "unique_key",
)


def row_matches(row: Row, job: RemoteJob, body: bytes) -> bool:
    """Whether ``row`` indexes ``job`` stored as ``body``: every column, except the time of
    the last write, which the index may know to the microsecond and the file only as mtime.
    """
    return row == row_for(job, body, row.finished_us)


_INSERT = (
    "INSERT INTO jobs (id, status, content_type, worker_id, ingestion_task_id,"
    " created_us, timeout_us, finished_us, version, size, body,"
    " priority, not_before_us, unique_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# job_counts from scratch (after a bulk load, with the triggers off; or by ``repair``).
_COUNTED = (
    "SELECT status, content_type, worker_id IS NOT NULL, ifnull(worker_id, ''),"
    " count(*), sum(size) FROM jobs GROUP BY 1, 2, 3, 4"
)

# How job_counts is kept: an insert or a delete of a row by its triggers; an update of a
# row by its writer (``CountChanges``), summed over a batch. An update trigger cost more
# than half of each row update of a claim or a finish (three statements a row), inside
# the one-writer section every process queues for.
CountKey = tuple[str, str, bool, str]


def _count_key(row: Row) -> CountKey:
    return (row.status, row.content_type, row.worker_id is not None, row.worker_id or "")


class CountChanges:
    """What the row updates of one transaction change in job_counts, applied at once."""

    def __init__(self) -> None:
        self._deltas: dict[CountKey, list[int]] = {}

    def move(self, before: Row, after: Row) -> None:
        """A row updated from ``before`` to ``after``."""
        old, new = _count_key(before), _count_key(after)
        if old == new and before.size == after.size:
            return
        self._add(old, -1, -before.size)
        self._add(new, 1, after.size)

    def _add(self, key: CountKey, jobs: int, size: int) -> None:
        delta = self._deltas.setdefault(key, [0, 0])
        delta[0] += jobs
        delta[1] += size

    def apply(self, conn: sqlite3.Connection) -> None:
        """Write the changes, inside the transaction of the updates they describe."""
        changed = [(*key, jobs, size) for key, (jobs, size) in self._deltas.items() if jobs or size]
        self._deltas.clear()
        if not changed:
            return
        conn.executemany(
            "INSERT INTO job_counts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
            " SET jobs = jobs + excluded.jobs, bytes = bytes + excluded.bytes",
            changed,
        )
        conn.execute("DELETE FROM job_counts WHERE jobs = 0")


def counts_match(conn: sqlite3.Connection) -> bool:
    """Whether job_counts says what the rows do (``verify``)."""
    kept = conn.execute("SELECT * FROM job_counts WHERE jobs != 0").fetchall()
    return sorted(kept) == sorted(conn.execute(_COUNTED).fetchall())


def recount(conn: sqlite3.Connection) -> None:
    """job_counts from the rows, inside the caller's write transaction."""
    conn.execute("DELETE FROM job_counts")
    conn.execute(f"INSERT INTO job_counts {_COUNTED}")


def where_clause(filters: Mapping[str, Sequence[str]]) -> tuple[str, list[Any]]:
    """SQL for filters that combine with AND; each column matches any of its values."""
    parts: list[str] = []
    params: list[Any] = []
    for column, values in filters.items():
        assert column in FILTER_COLUMNS
        if not values:
            parts.append("0")
        elif len(values) == 1:
            parts.append(f"{column} = ?")
            params.append(values[0])
        else:
            parts.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def put_rows(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Insert or replace rows (a replaced row is deleted, then inserted: the counting
    triggers see both)."""
    rows = list(rows)
    conn.executemany("DELETE FROM jobs WHERE id = ?", ((r.id,) for r in rows))
    _insert_rows(conn, rows)


def _insert_rows(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    conn.executemany(
        _INSERT,
        (
            (
                r.id,
                r.status,
                r.content_type,
                r.worker_id,
                r.ingestion_task_id,
                r.created_us,
                r.timeout_us,
                r.finished_us,
                r.version,
                r.size,
                r.body,
                r.priority,
                r.not_before_us,
                r.unique_key,
            )
            for r in rows
        ),
    )


def write_row(
    conn: sqlite3.Connection,
    job_id: str,
    row: Row | None,
    before: Row | None,
    counts: CountChanges,
) -> Row | None:
    """Insert, update or (``row`` None) delete the job's row, inside the caller's
    transaction, where ``before`` is its row now (``rows_of``, in the same transaction);
    returns ``before``, to put back if the write fails. An update adds to ``counts``,
    which the caller applies before its transaction ends.

    The update sets only the indexed columns whose stored value differs: SQLite then
    leaves the other indexes alone, which halves the cost of a typical transition.
    """
    if row is None:
        if before is not None:
            drop_row(conn, job_id)
    elif before is None:
        put_rows(conn, [row])
    else:
        columns = ["version = ?", "size = ?", "body = ?", "finished_us = ?"]
        values: list[Any] = [row.version, row.size, row.body, row.finished_us]
        for column in _CHANGEABLE:
            value = getattr(row, column)
            if value != getattr(before, column):
                columns.append(f"{column} = ?")
                values.append(value)
        values.append(job_id)
        conn.execute(f"UPDATE jobs SET {', '.join(columns)} WHERE id = ?", values)
        counts.move(before, row)
    return before


def replace_all_rows(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Swap every row for ``rows`` inside the caller's transaction.

    The secondary indexes and the counting triggers are dropped and rebuilt around the
    bulk insert: building an index from sorted data once, and counting once, is several
    times cheaper than maintaining both row by row.
    Readers in other processes keep their snapshot until the transaction commits.
    """
    derived = conn.execute(
        "SELECT type, name, sql FROM sqlite_master"
        " WHERE type IN ('index', 'trigger') AND tbl_name = 'jobs' AND sql IS NOT NULL"
    ).fetchall()
    for kind, name, _ in derived:
        conn.execute(f'DROP {kind.upper()} "{name}"')
    conn.execute("DELETE FROM jobs")
    _insert_rows(conn, rows)
    recount(conn)
    for _, _, sql in derived:
        conn.execute(sql)


def rows_of(conn: sqlite3.Connection, job_ids: Iterable[str]) -> dict[str, Row]:
    """The current rows of ``job_ids`` (those that have one), inside a transaction: one
    query for all of them."""
    return {
        found[0]: Row(*found)
        for found in conn.execute(
            "SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(job_ids)),),
        )
    }


def drop_row(conn: sqlite3.Connection, job_id: str) -> None:
    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


# -- reads ----------------------------------------------------------------------------


def key_holder(conn: sqlite3.Connection, unique_key: str, job_id: str) -> str | None:
    """The pending or processing job other than ``job_id`` that holds ``unique_key``,
    inside the caller's write transaction (writers are serialised, so the answer holds
    until it commits)."""
    row = conn.execute(
        "SELECT id FROM jobs WHERE unique_key = ? AND id != ?"
        " AND status IN ('pending', 'processing') LIMIT 1",
        (unique_key, job_id),
    ).fetchone()
    return None if row is None else str(row[0])


def parse_bodies(bodies: list[bytes]) -> list[RemoteJob]:
    """The jobs of the bodies copied into the index (set queries are answered from these).

    A copy indexed before this version that it refuses (a value out of range) is left out
    of the answer, as its file is of a rebuild; ``verify`` reports it and ``repair``
    quarantines it."""
    # Tens of thousands of new objects would set off the cyclic garbage collector again
    # and again, for nothing: none of them is garbage yet.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return [RemoteJob.from_json(body) for body in bodies]
    except ValueError:
        jobs = []
        for body in bodies:
            try:
                jobs.append(RemoteJob.from_json(body))
            except ValueError as exc:
                log.warning("skipped_invalid_index_copy", reason=str(exc).splitlines()[0])
        return jobs
    finally:
        if collecting:
            gc.enable()
