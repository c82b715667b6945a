"""The ``remote_jobs`` row: its columns, the SQL statements over them, a job ↔ row values.

Shared by ``PostgresJobRepository``; no connection is made here (pure strings and values).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .model import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus, RemoteJob

__all__ = [
    "ACTIVE",
    "ADD",
    "COLUMNS",
    "FIELDS",
    "FINISHED",
    "INSERT",
    "JSON_COLUMNS",
    "LOCK_ONE",
    "NOW",
    "ORDER",
    "RETURNING",
    "SET",
    "STATISTICS",
    "TABLE_SIZE",
    "TERMINAL",
    "UPDATE",
    "UPDATE_IF_VERSION",
    "UPSERT",
    "VALUES",
    "job_from_row",
    "job_params",
    "json_text",
    "key_violation",
    "statistics_from_rows",
    "update_params",
    "where_sql",
]

COLUMNS = (
    "id",
    "ingestion_task_id",
    "source_file_path",
    "content_type",
    "task_options",
    "status",
    "worker_id",
    "created_at",
    "started_at",
    "completed_at",
    "timeout_at",
    "error_message",
    "result_data",
    "retry_count",
    "max_retries",
    "version",
    "attempt",
    "not_before",
    "priority",
    "unique_key",
    "progress",
    "progress_message",
)
JSON_COLUMNS = frozenset({"task_options", "result_data"})
FIELDS = ", ".join(COLUMNS)
VALUES = ", ".join("%s::jsonb" if c in JSON_COLUMNS else "%s" for c in COLUMNS)
RETURNING = f" RETURNING {FIELDS}"
# Byte order for ids, spelled out although the column is already COLLATE "C", so a
# column redefined later cannot silently change the contract's order.
ORDER = ' ORDER BY created_at, id COLLATE "C"'

INSERT = f"INSERT INTO remote_jobs ({FIELDS}, updated_at) VALUES ({VALUES}, statement_timestamp())"
ADD = INSERT + " ON CONFLICT (id) DO NOTHING" + RETURNING
# save() without expected_version: one statement, so two savers cannot both read version n
# and both store n + 1.
UPSERT = (
    INSERT
    + " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("id", "version"))
    + ", version = remote_jobs.version + 1, updated_at = EXCLUDED.updated_at"
    + RETURNING
)
SET = (
    "UPDATE remote_jobs SET ("
    + ", ".join(COLUMNS[1:])
    + ", updated_at) = ("
    + ", ".join("%s::jsonb" if c in JSON_COLUMNS else "%s" for c in COLUMNS[1:])
    + ", statement_timestamp()) WHERE id = %s"
)
UPDATE = SET + RETURNING
UPDATE_IF_VERSION = SET + " AND version = %s" + RETURNING
LOCK_ONE = f"SELECT statement_timestamp(), {FIELDS} FROM remote_jobs WHERE id = %s FOR UPDATE"
# The "now" of queries that take an optional one: the caller's, else the server's.
NOW = "coalesce(%s::timestamptz, statement_timestamp())"
FINISHED = "coalesce(completed_at, updated_at)"  # matches the remote_jobs_status_finished index

ACTIVE = sorted(s.value for s in ACTIVE_STATUSES)
TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)

# One scan for every count: GROUPING() tells which grouping set a row is from.
STATISTICS = (
    "SELECT GROUPING(status, content_type, worker_id), status, content_type,"
    " worker_id, count(*) FROM remote_jobs"
    " GROUP BY GROUPING SETS ((status), (content_type), (worker_id), ())"
)
TABLE_SIZE = (
    "SELECT pg_total_relation_size((quote_ident(current_schema()) || '.remote_jobs')::regclass)"
)


def json_text(value: Any) -> str | None:
    """JSON for a JSONB column that comes back exactly as it went in.

    JSONB stores numbers as numeric and prints ``1e+20`` back as ``100000000000000000000``,
    which would return an integral float as an int; written with a ``.0`` it stays a float.
    """
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    # Only a float printed with a positive exponent needs the slow path.
    return text if "e+" not in text else _json_exact(value)


def _json_exact(value: Any) -> str:
    if type(value) is float:
        return f"{int(value)}.0" if value.is_integer() else json.dumps(value)
    if type(value) is dict:
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_json_exact(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if type(value) is list:
        return "[" + ",".join(_json_exact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def job_params(job: RemoteJob, version: int) -> list[Any]:
    """The values of ``COLUMNS`` for ``job`` stored as ``version``."""
    return [
        job.id,
        job.ingestion_task_id,
        job.source_file_path,
        job.content_type,
        json_text(job.task_options),
        job.status.value,
        job.worker_id,
        job.created_at,
        job.started_at,
        job.completed_at,
        job.timeout_at,
        job.error_message,
        json_text(job.result_data),
        job.retry_count,
        job.max_retries,
        version,
        job.attempt,
        job.not_before,
        job.priority,
        job.unique_key,
        job.progress,
        job.progress_message,
    ]


def update_params(job: RemoteJob, version: int) -> list[Any]:
    values = job_params(job, version)
    return [*values[1:], values[0]]  # SET everything but the id, then WHERE id = ...


def job_from_row(row: Sequence[Any]) -> RemoteJob:
    return RemoteJob.model_validate(dict(zip(COLUMNS, row, strict=True)))


def where_sql(filters: dict[str, list[str]]) -> tuple[str, list[Any]]:
    """SQL for ``repository.filter_values`` output: AND of "any of" per field."""
    parts: list[str] = []
    params: list[Any] = []
    for column, values in filters.items():
        assert column in ("status", "content_type", "worker_id", "ingestion_task_id")
        if not values:
            parts.append("false")
        elif len(values) == 1:
            # Plain equality gives the planner the tightest index range.
            parts.append(f"{column} = %s")
            params.append(values[0])
        else:
            parts.append(f"{column} = ANY(%s::text[])")
            params.append(values)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def statistics_from_rows(rows: Sequence[Sequence[Any]], size_bytes: int) -> dict[str, Any]:
    """``statistics()`` from the rows of ``STATISTICS`` and the table's size in bytes."""
    total = 0
    by_status: dict[str, int] = {}
    by_content: dict[str, int] = {}
    by_worker: dict[str, int] = {}
    for grouping, status, content_type, worker_id, n in rows:
        if grouping == 0b011:
            by_status[status] = n
        elif grouping == 0b101:
            by_content[content_type] = n
        elif grouping == 0b110:
            if worker_id is not None:
                by_worker[worker_id] = n
        else:
            total = n
    return {
        "total_jobs": total,
        "status_counts": {s.value: by_status.get(s.value, 0) for s in JobStatus},
        "content_type_counts": dict(sorted(by_content.items())),
        "worker_counts": dict(sorted(by_worker.items())),
        "storage_size_mb": round(size_bytes / (1024 * 1024), 2),
    }


UNIQUE_KEY_INDEX = "remote_jobs_unique_key"


def key_violation(exc: Exception) -> bool:
    """A unique violation of ``remote_jobs_unique_key`` (another job holds the key)."""
    import psycopg

    return (
        isinstance(exc, psycopg.errors.UniqueViolation)
        and getattr(exc.diag, "constraint_name", None) == UNIQUE_KEY_INDEX
    )
