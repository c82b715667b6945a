"""PostgreSQL side of the workers features: the in-place migration from the previous schema,
and claim plans that never scan pending jobs."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from hybridstore import JobStatus, PostgresJobRepository
from hybridstore.migrations import load_migrations
from hybridstore.model import utcnow
from hybridstore.pgclaims import ABANDONED, CLAIM_CANDIDATES, CLAIM_CANDIDATES_BY_TYPE
from tests.conftest import new_job

pytestmark = pytest.mark.postgres


def _execute(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_a_database_at_0001_migrates_in_place_with_its_jobs(pg_schema_dsn: str) -> None:
    # The previous release's schema, built by its own migration file, with jobs in it.
    first = load_migrations("postgres")[0]
    _execute(
        pg_schema_dsn,
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    _execute(pg_schema_dsn, first.sql)
    _execute(pg_schema_dsn, "INSERT INTO schema_migrations VALUES (1, %s)", (first.name,))
    t0 = utcnow() - timedelta(hours=1)
    rows = [
        ("old-pending", "pending", None, None, 0),
        ("old-processing", "processing", "w0", t0 + timedelta(minutes=1), 1),
        ("old-failed", "failed", None, None, 1),
    ]
    for n, (job_id, status, worker, timeout_at, attempt) in enumerate(rows):
        _execute(
            pg_schema_dsn,
            "INSERT INTO remote_jobs (id, ingestion_task_id, source_file_path, content_type,"
            " task_options, status, worker_id, created_at, timeout_at, attempt, version)"
            " VALUES (%s, %s, %s, 'document', %s::jsonb, %s, %s, %s, %s, %s, 3)",
            (
                job_id,
                f"task-{n}",
                f"/in/{n}.pdf",
                json.dumps({"n": n}),
                status,
                worker,
                t0 + timedelta(seconds=n),
                timeout_at,
                attempt,
            ),
        )

    with PostgresJobRepository(pg_schema_dsn) as repo:
        applied = _execute(pg_schema_dsn, "SELECT version FROM schema_migrations ORDER BY 1")
        assert applied == [(m.version,) for m in load_migrations("postgres")]
        jobs = {job.id: job for job in repo.find()}
        assert set(jobs) == {r[0] for r in rows}
        for job_id, status, worker, _, attempt in rows:
            job = jobs[job_id]
            assert (job.status.value, job.worker_id, job.attempt, job.version) == (
                status,
                worker,
                attempt,
                3,
            )
            assert job.task_options == {"n": int(job.ingestion_task_id.split("-")[1])}
            assert (job.not_before, job.priority, job.unique_key) == (None, 0, None)
            assert (job.progress, job.progress_message) == (None, None)
        # The old rows take part in the new rules: the abandoned lease comes back by itself
        # (before the younger pending job), the failed one can be requeued.
        claimed = repo.claim_many("w1", 5)
        assert [j.id for j in claimed] == ["old-pending", "old-processing"]
        assert claimed[1].attempt == 2 and claimed[1].retry_count == 1
        assert repo.requeue("old-failed").status is JobStatus.PENDING
        assert repo.add(new_job(unique_key="k", priority=2)).unique_key == "k"


def _plan(dsn: str, sql: str, params: dict[str, Any]) -> str:
    return "\n".join(row[0] for row in _execute(dsn, "EXPLAIN " + sql, params))


def test_claims_read_indexes_not_the_pending_jobs(pg_schema_dsn: str) -> None:
    """10,000 delayed jobs older and higher in priority than the one ready job: the claim
    reads the ready index and the due range of the delayed index, never a scan."""
    with PostgresJobRepository(pg_schema_dsn) as repo:
        later = utcnow() + timedelta(hours=1)
        t0 = utcnow() - timedelta(days=1)
        repo.add_many(
            new_job(
                content_type=("audio", "video")[n % 2],
                priority=5,
                not_before=later,
                created_at=t0 + timedelta(seconds=n),
            )
            for n in range(10_000)
        )
        ready = repo.add(new_job(content_type="audio"))
        _execute(pg_schema_dsn, "ANALYZE remote_jobs")
        now = {"now": utcnow(), "n": 1}
        plans = [
            _plan(pg_schema_dsn, CLAIM_CANDIDATES, {**now, "types": None}),
            _plan(pg_schema_dsn, CLAIM_CANDIDATES_BY_TYPE, {**now, "types": ["audio", "video"]}),
        ]
        for plan in plans:
            assert "Seq Scan on remote_jobs" not in plan, plan
            assert "remote_jobs_delayed" in plan, plan
            # remote_jobs_ready or, by the planner's choice, remote_jobs_ready_content_type
            assert "Index Scan using remote_jobs_ready" in plan, plan
        abandoned = _plan(pg_schema_dsn, ABANDONED.format(types=""), {"now": utcnow(), "limit": 32})
        assert "remote_jobs_status_timeout" in abandoned, abandoned
        assert repo.claim_next("w").id == ready.id  # type: ignore[union-attr]
        assert repo.claim_next("w", content_types=["audio"]) is None
