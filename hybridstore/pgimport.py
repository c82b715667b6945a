"""Importing jobs into PostgreSQL as they are (versions and timestamps kept): one batch.

``PostgresJobRepository.import_jobs`` runs ``import_batch`` in one transaction and retries
it when a concurrent insert took one of the ids meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import RemoteJob
from .pgrows import FIELDS, INSERT, SET, job_from_row, job_params, update_params
from .repository import ImportResult, import_action

if TYPE_CHECKING:
    from .pgconnect import Cursor

__all__ = ["import_batch"]


def import_batch(cur: Cursor, batch: dict[str, RemoteJob]) -> ImportResult:
    """Lock the stored copies of ``batch``'s ids, then insert, replace or keep each job as
    ``repository.import_action`` decides."""
    result = ImportResult()
    rows = cur.execute(
        f"SELECT {FIELDS} FROM remote_jobs WHERE id = ANY(%s::text[]) FOR UPDATE",
        (list(batch),),
    ).fetchall()
    stored = {job.id: job for job in map(job_from_row, rows)}
    inserts: list[list[Any]] = []
    updates: list[list[Any]] = []
    for job_id, job in batch.items():
        action = import_action(stored.get(job_id), job)
        if action == "insert":
            inserts.append(job_params(job, job.version))
        elif action == "replace":
            updates.append(update_params(job, job.version))
        result.record(job_id, action)
    if inserts:
        cur.executemany(INSERT, inserts)
    if updates:
        cur.executemany(SET, updates)
    return result
