"""Claims on PostgreSQL: which rows a claim or an expiry locks, and how they are written back.

One call's work inside the transaction ``PostgresJobRepository`` opens: abandoned leases of
the asked content types taken back (``SKIP LOCKED``), then the first ready jobs locked with
``SKIP LOCKED`` from the partial indexes in claim order and claimed; overdue leases expired.
The rules themselves come from ``hybridstore.lifecycle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import lifecycle
from .errors import JobNotFound
from .model import RemoteJob
from .pgrows import FIELDS, LOCK_ONE, NOW, UPDATE, job_from_row, update_params

if TYPE_CHECKING:
    from .pgconnect import Cursor

__all__ = [
    "ABANDONED",
    "CLAIM_CANDIDATES",
    "CLAIM_CANDIDATES_BY_TYPE",
    "TAKE_BACK_BATCH",
    "claim_rows",
    "expire_rows",
    "write_job",
]

#: Abandoned leases one claim takes back at most: a claim's cost stays bounded even after
#: many workers died at once (the rest are taken back by the next claims).
TAKE_BACK_BATCH = 32
_CLAIM_ORDER = ' ORDER BY priority DESC, created_at, id COLLATE "C"'


def _candidates_sql(by_type: bool) -> str:
    """The ready jobs a claim may take: the first ``n`` in claim order of each partial index
    (per content type when asked), locked, skipping rows other transactions hold."""
    if by_type:
        ready = (
            f"SELECT j.* FROM unnest(%(types)s::text[]) AS t(ct) CROSS JOIN LATERAL ("
            f"SELECT {FIELDS} FROM remote_jobs WHERE status = 'pending'"
            f" AND not_before IS NULL AND content_type = t.ct{_CLAIM_ORDER}"
            " LIMIT %(n)s FOR UPDATE SKIP LOCKED) AS j"
        )
        due_types = " AND content_type = ANY(%(types)s::text[])"
    else:
        ready = (
            f"SELECT {FIELDS} FROM remote_jobs WHERE status = 'pending'"
            f" AND not_before IS NULL{_CLAIM_ORDER} LIMIT %(n)s FOR UPDATE SKIP LOCKED"
        )
        due_types = ""
    due = (
        f"SELECT {FIELDS} FROM remote_jobs WHERE status = 'pending'"
        f" AND not_before <= %(now)s{due_types}{_CLAIM_ORDER}"
        " LIMIT %(n)s FOR UPDATE SKIP LOCKED"
    )
    return (
        f"WITH ready AS ({ready}), due AS ({due}) SELECT * FROM ready UNION ALL SELECT * FROM due"
    )


CLAIM_CANDIDATES = _candidates_sql(False)
CLAIM_CANDIDATES_BY_TYPE = _candidates_sql(True)
ABANDONED = (
    f"SELECT {FIELDS} FROM remote_jobs WHERE status = 'processing' AND timeout_at < %(now)s"
    '{types} ORDER BY timeout_at, id COLLATE "C" LIMIT %(limit)s FOR UPDATE SKIP LOCKED'
)


def write_job(cur: Cursor, job: RemoteJob, version: int) -> RemoteJob:
    """Write ``job`` back as ``version``; its row is locked by this transaction."""
    row = cur.execute(UPDATE, update_params(job, version)).fetchone()
    assert row is not None, "the row is locked by this transaction"
    return job_from_row(row)


def claim_rows(
    cur: Cursor, worker_id: str, n: int, types: Sequence[str] | None, lease_seconds: float
) -> list[RemoteJob]:
    """Up to ``n`` ready jobs claimed for ``worker_id`` in the cursor's transaction,
    abandoned leases of ``types`` (None: any) taken back first."""
    clock = cur.execute("SELECT statement_timestamp()").fetchone()
    assert clock is not None
    now: datetime = clock[0]
    params: dict[str, Any] = {"now": now, "n": n, "types": types}
    abandoned = cur.execute(
        ABANDONED.format(types=" AND content_type = ANY(%(types)s::text[])" if types else ""),
        {**params, "limit": TAKE_BACK_BATCH},
    ).fetchall()
    for row in abandoned:
        current = job_from_row(row)
        write_job(cur, lifecycle.take_back(current, now), current.version + 1)
    rows = cur.execute(CLAIM_CANDIDATES_BY_TYPE if types else CLAIM_CANDIDATES, params).fetchall()
    chosen = sorted(map(job_from_row, rows), key=lifecycle.claim_order_key)[:n]
    return [
        write_job(cur, lifecycle.claim(job, worker_id, lease_seconds, now), job.version + 1)
        for job in chosen
    ]


def expire_rows(cur: Cursor, now: datetime | None) -> list[RemoteJob]:
    """Processing jobs past their lease → pending or timeout, in the cursor's transaction;
    rows another transaction holds are skipped."""
    changed = []
    rows = cur.execute(
        f"SELECT {NOW}, {FIELDS} FROM remote_jobs"
        f" WHERE status = 'processing' AND timeout_at < {NOW}"
        ' ORDER BY timeout_at, id COLLATE "C" FOR UPDATE SKIP LOCKED',
        (now, now),
    ).fetchall()
    for row in rows:
        current = job_from_row(row[1:])
        if lifecycle.is_overdue(current, row[0]):
            new = lifecycle.expire(current, row[0])
            changed.append(write_job(cur, new, current.version + 1))
    return changed


def complete_rows(
    cur: Cursor,
    worker_id: str,
    batch: Sequence[tuple[str, dict[str, Any] | None, int | None]],
) -> list[RemoteJob]:
    """``complete_many`` inside the caller's transaction: each row locked (in id order, so
    two batches never wait for each other in a circle), every job checked before any is
    written; a refusal raises and the transaction writes nothing."""
    found: dict[str, tuple[datetime, RemoteJob]] = {}
    for job_id in sorted({job_id for job_id, _, _ in batch}):
        row = cur.execute(LOCK_ONE, (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        found[job_id] = (row[0], job_from_row(row[1:]))
    changed = []
    for job_id, result, attempt in batch:
        now, current = found[job_id]
        changed.append((lifecycle.complete(current, worker_id, result, attempt, now), current))
    return [write_job(cur, new, current.version + 1) for new, current in changed]
