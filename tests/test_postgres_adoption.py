"""A database of the older design (its ``remote_jobs`` from the SQLAlchemy model or the init
script, perhaps its own ``schema_migrations``) is adopted on first use: converted in place,
every job kept exactly; anything else named ``remote_jobs`` is a one-line ``SchemaError``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from hybridstore import JobStatus, PostgresJobRepository, SchemaError
from hybridstore.cli import cli
from hybridstore.migrations import load_migrations
from tests.conftest import new_job
from tests.postgres_support import together

pytestmark = pytest.mark.postgres

# The older SQLAlchemy model as ``metadata.create_all`` creates it: defaults are the
# model's (client side), indexes are SQLAlchemy's ``ix_<table>_<column>``.
SQLALCHEMY_DDL = """
CREATE TABLE remote_jobs (
    id UUID NOT NULL,
    ingestion_task_id VARCHAR(255) NOT NULL,
    source_file_path TEXT NOT NULL,
    content_type VARCHAR(50) NOT NULL,
    task_options JSONB NOT NULL,
    status VARCHAR(20) NOT NULL,
    worker_id VARCHAR(255),
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    started_at TIMESTAMP WITHOUT TIME ZONE,
    completed_at TIMESTAMP WITHOUT TIME ZONE,
    error_message TEXT,
    result_data JSONB,
    retry_count INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id)
);
CREATE INDEX ix_remote_jobs_ingestion_task_id ON remote_jobs (ingestion_task_id);
CREATE INDEX ix_remote_jobs_content_type ON remote_jobs (content_type);
CREATE INDEX ix_remote_jobs_status ON remote_jobs (status);
CREATE INDEX ix_remote_jobs_created_at ON remote_jobs (created_at);
"""

# The older init script: server-side defaults, a CHECK of its own, and its own
# schema_migrations recording '001'.
INIT_SCRIPT_DDL = """
CREATE TABLE schema_migrations (
    version VARCHAR(255) PRIMARY KEY,
    description TEXT,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE remote_jobs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    ingestion_task_id VARCHAR(255) NOT NULL,
    source_file_path TEXT NOT NULL,
    content_type VARCHAR(50) NOT NULL,
    task_options JSONB NOT NULL DEFAULT '{}',
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'timeout', 'cancelled')),
    worker_id VARCHAR(255),
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    error_message TEXT,
    result_data JSONB,
    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 3,
    timeout_at TIMESTAMP
);
CREATE INDEX idx_remote_jobs_status ON remote_jobs (status);
CREATE INDEX idx_remote_jobs_worker_id ON remote_jobs (worker_id);
INSERT INTO schema_migrations (version, description) VALUES ('001', 'Create remote_jobs table');
INSERT INTO schema_migrations (version, description) VALUES ('002', 'Add timeout_at');
"""

# A looser hand-made variant: text ids without a primary key, JSON (not JSONB), timestamps
# already with time zone, a smallint counter.
LOOSE_DDL = """
CREATE TABLE remote_jobs (
    id VARCHAR(36) NOT NULL,
    ingestion_task_id TEXT NOT NULL,
    source_file_path TEXT NOT NULL,
    content_type TEXT NOT NULL,
    task_options JSON,
    status TEXT NOT NULL,
    worker_id TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    error_message TEXT,
    result_data JSON,
    retry_count SMALLINT NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_at TIMESTAMPTZ
);
"""

FLAVOURS = {"sqlalchemy": SQLALCHEMY_DDL, "init_script": INIT_SCRIPT_DDL, "loose": LOOSE_DDL}

# Naive UTC, as the older design wrote them.
T0 = datetime(2025, 6, 1, 8, 30, 15, 123456)
LATER = datetime(2099, 1, 1, 0, 0, 0)  # a lease that has not run out


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


def insert_older(dsn: str, **row: Any) -> dict[str, Any]:
    """One row the way the older model wrote it: a UUID id, naive timestamps, the model's
    defaults filled in by the client. Returns the row as written."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "ingestion_task_id": f"task-{uuid.uuid4().hex[:8]}",
        "source_file_path": "/in/report.pdf",
        "content_type": "document",
        "task_options": {},
        "status": "pending",
        "worker_id": None,
        "created_at": T0,
        "started_at": None,
        "completed_at": None,
        "error_message": None,
        "result_data": None,
        "retry_count": 0,
        "max_retries": 3,
        "timeout_at": None,
        **row,
    }
    json_null = values.pop("json_null_result", False)
    params = [
        str(v) if k == "id" else json.dumps(v) if k in ("task_options", "result_data") else v
        for k, v in values.items()
    ]
    if values["result_data"] is None and not json_null:
        params[list(values).index("result_data")] = None  # SQL NULL, not JSON null
    query(
        dsn,
        f"INSERT INTO remote_jobs ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))})",
        *params,
    )
    return values


def aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def older_database(dsn: str, flavour: str = "sqlalchemy") -> list[dict[str, Any]]:
    """The older design's table in the test schema, with a job in every state."""
    query(dsn, FLAVOURS[flavour])
    return [
        insert_older(dsn, created_at=T0, task_options={"lang": "de", "pages": [1, 2.5]}),
        insert_older(
            dsn,
            created_at=T0 + timedelta(minutes=1),
            status="processing",
            worker_id="old-worker",
            started_at=T0 + timedelta(minutes=2),
            timeout_at=LATER,
            retry_count=1,
        ),
        insert_older(
            dsn,
            created_at=T0 + timedelta(minutes=2),
            status="completed",
            worker_id="old-worker",
            started_at=T0 + timedelta(minutes=3),
            completed_at=T0 + timedelta(minutes=4, microseconds=1),
            result_data={"text": "ü ✓", "n": 3},
        ),
        insert_older(
            dsn,
            created_at=T0 + timedelta(minutes=3),
            status="failed",
            error_message="boom",
            retry_count=3,
            completed_at=T0 + timedelta(minutes=5),
            # SQLAlchemy's JSONB stores a None it was given as JSON null.
            json_null_result=True,
        ),
        insert_older(dsn, created_at=T0 + timedelta(minutes=4), content_type="audio"),
    ]


def columns(dsn: str) -> dict[str, tuple[Any, ...]]:
    rows = query(
        dsn,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " coalesce(co.collname, ''), coalesce(pg_get_expr(d.adbin, d.adrelid), '')"
        " FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = 'remote_jobs'::regclass AND a.attnum > 0 AND NOT a.attisdropped",
    )
    return {row[0]: row[1:] for row in rows}


def describe_table(dsn: str) -> dict[str, Any]:
    """Everything about remote_jobs but its column order and its schema's name."""
    schema = query(dsn, "SELECT current_schema()")[0][0]
    return {
        "columns": columns(dsn),
        "constraints": sorted(
            query(
                dsn,
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'remote_jobs'::regclass",
            )
        ),
        "indexes": sorted(
            (name, definition.replace(f"{schema}.", ""))
            for name, definition in query(
                dsn,
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = current_schema() AND tablename = 'remote_jobs'",
            )
        ),
    }


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- adoption -----------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_older_jobs_read_back_exactly_and_work(pg_schema_dsn: str, flavour: str) -> None:
    rows = older_database(pg_schema_dsn, flavour)
    with capture_logs() as logs:
        repo = PostgresJobRepository(pg_schema_dsn)
    with repo:
        assert [e["event"] for e in logs if e["event"] == "adopted_older_remote_jobs"] == [
            "adopted_older_remote_jobs"
        ]
        jobs = repo.find()
        assert [job.id for job in jobs] == [str(row["id"]) for row in rows]
        for job, row in zip(jobs, rows, strict=True):
            assert job.id == str(row["id"])
            for name in ("ingestion_task_id", "source_file_path", "content_type", "worker_id"):
                assert getattr(job, name) == row[name], name
            assert job.status == JobStatus(row["status"])
            assert job.task_options == row["task_options"]
            assert job.result_data == row["result_data"]
            assert (job.error_message, job.retry_count, job.max_retries) == (
                row["error_message"],
                row["retry_count"],
                row["max_retries"],
            )
            for name in ("created_at", "started_at", "completed_at", "timeout_at"):
                value = getattr(job, name)
                assert value == aware(row[name]), name
                assert value is None or value.utcoffset() == timedelta(0), name
            # Every stored row has been saved once; none has been claimed by hybridstore.
            assert (job.version, job.attempt) == (1, 0)
        pending, processing, completed, failed, audio = jobs

        # The indexed reads.
        assert repo.count() == 5
        assert [j.id for j in repo.find(status="pending")] == [pending.id, audio.id]
        assert [j.id for j in repo.find(content_type="audio")] == [audio.id]
        assert [j.id for j in repo.find(worker_id="old-worker")] == [processing.id, completed.id]
        assert repo.find_by_ingestion_task(failed.ingestion_task_id) == failed
        assert repo.get(completed.id) == completed
        assert repo.statistics()["status_counts"]["pending"] == 2
        assert repo.expired(now=datetime(2100, 1, 1, tzinfo=UTC)) == [processing]

        # The lifecycle: the older worker's job completes without an attempt number...
        done = repo.complete(processing.id, "old-worker", {"ok": True})
        assert (done.status, done.version, done.result_data) == (
            JobStatus.COMPLETED,
            2,
            {"ok": True},
        )
        # ... and a new claim is attempt 1, fenced as usual.
        claimed = repo.claim_next("new-worker", content_types=["document"])
        assert claimed is not None and claimed.id == pending.id
        assert (claimed.attempt, claimed.version) == (1, 2)
        assert repo.complete(claimed.id, "new-worker", attempt=1).status == JobStatus.COMPLETED
        second = repo.claim_next("w2")
        assert second is not None and second.id == audio.id
        retried = repo.fail(audio.id, "w2", "again", attempt=1)
        assert (retried.status, retried.retry_count, retried.worker_id) == (
            JobStatus.PENDING,
            1,
            None,
        )
        # Optimistic writes work on adopted rows (version 1, not 0).
        saved = repo.save(failed.model_copy(update={"error_message": "x"}), expected_version=1)
        assert saved.version == 2
        # New jobs sit beside the old ones.
        assert repo.add(new_job(id="fresh")).version == 1
        assert repo.cleanup(days_old=7, now=datetime(2100, 1, 1, tzinfo=UTC)) == 4

    assert query(pg_schema_dsn, "SELECT version, name FROM schema_migrations ORDER BY 1") == [
        (m.version, m.name) for m in load_migrations("postgres")
    ]
    PostgresJobRepository(pg_schema_dsn).close()  # opening again changes nothing
    assert len(query(pg_schema_dsn, "SELECT * FROM schema_migrations")) == len(
        load_migrations("postgres")
    )


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_the_adopted_table_is_what_a_new_schema_has(pg_schema_dsn: str, flavour: str) -> None:
    PostgresJobRepository(pg_schema_dsn).close()
    fresh = describe_table(pg_schema_dsn)
    query(pg_schema_dsn, "DROP TABLE remote_jobs, schema_migrations")
    older_database(pg_schema_dsn, flavour)
    PostgresJobRepository(pg_schema_dsn).close()
    adopted = describe_table(pg_schema_dsn)
    assert adopted == fresh


def test_the_older_schema_migrations_is_renamed_aside_and_logged(pg_schema_dsn: str) -> None:
    older_database(pg_schema_dsn, "init_script")
    # A name already taken: the next free one is used.
    query(pg_schema_dsn, "CREATE TABLE schema_migrations_legacy (x int)")
    with capture_logs() as logs:
        PostgresJobRepository(pg_schema_dsn).close()
    renamed = [e for e in logs if e["event"] == "renamed_older_schema_migrations"]
    assert [e["renamed_to"] for e in renamed] == ["schema_migrations_legacy_2"]
    assert renamed[0]["log_level"] == "warning"
    assert query(
        pg_schema_dsn, "SELECT version, description FROM schema_migrations_legacy_2 ORDER BY 1"
    ) == [("001", "Create remote_jobs table"), ("002", "Add timeout_at")]
    assert query(pg_schema_dsn, "SELECT version, name FROM schema_migrations ORDER BY 1") == [
        (m.version, m.name) for m in load_migrations("postgres")
    ]


def test_concurrent_first_users_adopt_once(pg_schema_dsn: str) -> None:
    rows = older_database(pg_schema_dsn, "init_script")

    def open_one() -> None:
        with PostgresJobRepository(pg_schema_dsn) as repo:
            assert repo.count() == len(rows)

    assert together(6, open_one) == []
    assert query(pg_schema_dsn, "SELECT version FROM schema_migrations ORDER BY 1") == [
        (m.version,) for m in load_migrations("postgres")
    ]
    assert query(
        pg_schema_dsn,
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() ORDER BY 1",
    ) == [("remote_jobs",), ("schema_migrations",), ("schema_migrations_legacy",)]


def test_db_test_init_and_migrate_adopt_from_the_cli(pg_schema_dsn: str) -> None:
    older_database(pg_schema_dsn, "init_script")
    code, out, _ = invoke("db", "test", "--url", pg_schema_dsn)
    latest = len(load_migrations("postgres"))
    assert code == 1 and f"schema version 0 of {latest}" in out and "5 jobs" in out
    code, out, err = invoke("db", "init", "--url", pg_schema_dsn)
    assert code == 0, out + err
    assert out.splitlines() == [
        "adopted remote_jobs of the older design (5 jobs)",
        "adopted schema_migrations of the older design, renamed to schema_migrations_legacy",
        *(f"applied {m.version:04d}_{m.name}" for m in load_migrations("postgres")),
        out.splitlines()[-1],
    ]
    assert "up to date, 5 jobs" in out
    assert "Traceback" not in err
    code, out, _ = invoke("db", "migrate", "--url", pg_schema_dsn, "--json")
    assert code == 0 and json.loads(out)["adopted"] == [] and json.loads(out)["applied"] == []
    code, out, _ = invoke("--data-dir", pg_schema_dsn, "stats", "--json")
    assert code == 0 and json.loads(out)["total_jobs"] == 5


# -- what cannot be adopted ---------------------------------------------------------------

UNEXPECTED = {
    "other_columns": "CREATE TABLE remote_jobs (id integer PRIMARY KEY, payload text)",
    "a_view": "CREATE VIEW remote_jobs AS SELECT 1 AS id",
    "an_extra_column": SQLALCHEMY_DDL + "ALTER TABLE remote_jobs ADD COLUMN priority int;",
    "a_wrong_type": SQLALCHEMY_DDL.replace("retry_count INTEGER", "retry_count TEXT"),
    "a_foreign_key_on_the_id": SQLALCHEMY_DDL
    + "CREATE TABLE job_notes (job_id uuid REFERENCES remote_jobs (id));",
}


@pytest.mark.parametrize("shape", sorted(UNEXPECTED))
def test_a_remote_jobs_of_neither_shape_is_a_schema_error_and_untouched(
    pg_schema_dsn: str, shape: str
) -> None:
    query(pg_schema_dsn, UNEXPECTED[shape])
    if shape != "a_view" and shape != "other_columns":
        insert_older(pg_schema_dsn, **({"retry_count": "0"} if shape == "a_wrong_type" else {}))
    before = columns(pg_schema_dsn)
    with pytest.raises(SchemaError, match="remote_jobs") as caught:
        PostgresJobRepository(pg_schema_dsn)
    assert "\n" not in str(caught.value)
    assert "schema 'hs_test_" in str(caught.value)
    assert columns(pg_schema_dsn) == before, "nothing changed"
    assert query(pg_schema_dsn, "SELECT to_regclass('schema_migrations') IS NULL") == [(True,)], (
        "no migration recorded"
    )


def test_hybridstores_table_without_its_record_is_a_schema_error(pg_schema_dsn: str) -> None:
    PostgresJobRepository(pg_schema_dsn).close()
    query(pg_schema_dsn, "DROP TABLE schema_migrations")
    with pytest.raises(SchemaError, match="remote_jobs has hybridstore's columns"):
        PostgresJobRepository(pg_schema_dsn)


def test_rows_hybridstore_could_not_read_stop_the_adoption_before_any_change(
    pg_schema_dsn: str,
) -> None:
    older_database(pg_schema_dsn, "init_script")
    query(pg_schema_dsn, "ALTER TABLE remote_jobs DROP CONSTRAINT remote_jobs_status_check")
    insert_older(pg_schema_dsn, status="queued")
    insert_older(pg_schema_dsn, task_options=[1, 2])
    before = columns(pg_schema_dsn)
    with pytest.raises(SchemaError) as caught:
        PostgresJobRepository(pg_schema_dsn)
    message = str(caught.value)
    assert "remote_jobs" in message and "'queued'" in message and "JSON object" in message
    assert columns(pg_schema_dsn) == before
    # The older schema_migrations was not moved either: the transaction rolled back.
    assert query(pg_schema_dsn, "SELECT count(*) FROM schema_migrations") == [(2,)]
    assert query(pg_schema_dsn, "SELECT to_regclass('schema_migrations_legacy')") == [(None,)]


def test_another_tools_schema_migrations_is_never_renamed(pg_schema_dsn: str) -> None:
    older_database(pg_schema_dsn, "sqlalchemy")
    query(pg_schema_dsn, "CREATE TABLE schema_migrations (version varchar PRIMARY KEY)")
    with pytest.raises(SchemaError, match="not hybridstore's"):
        PostgresJobRepository(pg_schema_dsn)
    assert query(pg_schema_dsn, "SELECT to_regclass('schema_migrations_legacy')") == [(None,)]


@pytest.mark.parametrize(
    "command",
    [
        ["db", "init", "--url", "{dsn}"],
        ["db", "migrate", "--url", "{dsn}"],
        ["db", "test", "--url", "{dsn}"],
        ["--data-dir", "{dsn}", "stats"],
        ["--data-dir", "{dsn}", "list"],
    ],
    ids=lambda command: " ".join(c for c in command if c != "{dsn}"),
)
def test_the_cli_says_it_in_one_line_without_a_traceback(
    pg_schema_dsn: str, command: list[str]
) -> None:
    query(pg_schema_dsn, UNEXPECTED["other_columns"])
    code, out, err = invoke(*[pg_schema_dsn if c == "{dsn}" else c for c in command])
    assert code == 1
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "remote_jobs" in lines[0], err
    assert "psycopg" not in err
