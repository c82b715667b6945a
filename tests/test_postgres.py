"""What only the PostgreSQL backend has: its schema and migrations, running without
psycopg, many processes claiming from one table, and the ``db`` administration calls.

The shared behaviour is in ``tests/contract`` (which runs on PostgreSQL too)."""

from __future__ import annotations

import importlib
import multiprocessing
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridstore import (
    InvalidArgument,
    JobStatus,
    PostgresJobRepository,
    RemoteJob,
    SchemaError,
    open_repository,
)
from hybridstore.errors import BackendUnavailable
from hybridstore.migrations import Migration, load_migrations
from tests.conftest import new_job
from tests.postgres_support import schema_dsn, together

pytestmark = pytest.mark.postgres


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


def schema_of(dsn: str) -> str:
    return str(query(dsn, "SELECT current_schema()")[0][0])


@pytest.fixture
def repo(pg_schema_dsn: str) -> Iterator[PostgresJobRepository]:
    with PostgresJobRepository(pg_schema_dsn) as opened:
        yield opened


# -- schema and migrations ----------------------------------------------------------------


def test_opening_creates_the_schema_in_the_search_path_and_records_it(
    pg_schema_dsn: str,
) -> None:
    schema = schema_of(pg_schema_dsn)
    PostgresJobRepository(pg_schema_dsn).close()
    names = [m.name for m in load_migrations("postgres")]
    recorded = query(pg_schema_dsn, "SELECT version, name FROM schema_migrations ORDER BY 1")
    assert recorded == [(n + 1, name) for n, name in enumerate(names)]
    tables = query(
        pg_schema_dsn,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
        schema,
    )
    assert tables == [("remote_jobs",), ("schema_migrations",)]
    # Opening again applies nothing more.
    PostgresJobRepository(pg_schema_dsn).close()
    assert len(query(pg_schema_dsn, "SELECT * FROM schema_migrations")) == len(names)


def test_every_query_has_an_index(pg_schema_dsn: str) -> None:
    PostgresJobRepository(pg_schema_dsn).close()
    indexes = {
        row[0]
        for row in query(
            pg_schema_dsn,
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = 'remote_jobs'",
        )
    }
    text = "\n".join(indexes)
    for columns in (
        "(status, created_at, id)",
        "(status, content_type, created_at, id)",
        "(ingestion_task_id, created_at, id)",
        "(status, timeout_at)",
        "(status, COALESCE(completed_at, updated_at))",
    ):
        assert columns in text, f"no index on {columns}"


def test_concurrent_first_users_do_not_race(pg_schema_dsn: str) -> None:
    assert together(6, lambda: PostgresJobRepository(pg_schema_dsn).close()) == []
    assert len(query(pg_schema_dsn, "SELECT * FROM schema_migrations")) == len(
        load_migrations("postgres")
    )


def test_a_newer_schema_is_refused(pg_schema_dsn: str) -> None:
    PostgresJobRepository(pg_schema_dsn).close()
    query(pg_schema_dsn, "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
    with pytest.raises(SchemaError, match="newer"):
        PostgresJobRepository(pg_schema_dsn)


def test_a_pending_migration_is_applied_on_opening(
    repo: PostgresJobRepository, pg_schema_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.add(new_job(id="kept"))
    known = load_migrations("postgres")
    extra = Migration(len(known) + 1, "extra_table", "CREATE TABLE extra_thing (x int);")
    monkeypatch.setattr("hybridstore.pgschema.load_migrations", lambda kind: [*known, extra])
    with PostgresJobRepository(pg_schema_dsn) as again:
        assert again.get("kept") is not None
    assert query(pg_schema_dsn, "SELECT max(version) FROM schema_migrations") == [(extra.version,)]
    assert query(pg_schema_dsn, "SELECT count(*) FROM extra_thing") == [(0,)]


def test_a_foreign_schema_migrations_table_is_refused(pg_schema_dsn: str) -> None:
    query(pg_schema_dsn, "CREATE TABLE schema_migrations (version varchar PRIMARY KEY)")
    with pytest.raises(SchemaError, match="not hybridstore's"):
        PostgresJobRepository(pg_schema_dsn)


def test_a_search_path_naming_no_schema_is_refused(pg_server_dsn: str) -> None:
    with pytest.raises(SchemaError, match="search_path"):
        PostgresJobRepository(schema_dsn(pg_server_dsn, f"missing_{uuid.uuid4().hex[:8]}"))


# -- without psycopg, without a server ----------------------------------------------------


def test_without_psycopg_import_works_and_use_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes "import psycopg" fail
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    monkeypatch.delitem(sys.modules, "hybridstore.postgres")
    fresh = importlib.import_module("hybridstore.postgres")
    with pytest.raises(BackendUnavailable, match=r"pip install 'hybridstore\[postgres\]'"):
        fresh.PostgresJobRepository("postgresql://postgres@127.0.0.1/test")
    with pytest.raises(BackendUnavailable, match="hybridstore"):
        open_repository("postgresql://postgres@127.0.0.1/test")


def test_importing_hybridstore_never_imports_psycopg() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "import hybridstore, hybridstore.postgres, hybridstore.transfer\n"
        "try:\n"
        "    hybridstore.PostgresJobRepository('postgresql://x@127.0.0.1/none')\n"
        "except hybridstore.HybridStoreError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.startswith("BackendUnavailable"), done.stdout + done.stderr
    assert "pip install 'hybridstore[postgres]'" in done.stdout


def test_an_unreachable_server_is_backend_unavailable_without_the_password() -> None:
    dsn = "postgresql://someone:s3cret@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(BackendUnavailable, match=re.escape("127.0.0.1:1/nowhere")) as caught:
        PostgresJobRepository(dsn)
    assert "s3cret" not in str(caught.value)


# -- values -------------------------------------------------------------------------------


def test_json_values_come_back_exactly(repo: PostgresJobRepository) -> None:
    options = {
        "big": 1e20,
        "huge": -1.5e300,
        "tiny": 5e-324,
        "int": 10**20,
        "one": 1.0,
        "nested": {"z": [1, 2.5, None, True, "ü ✓"], "a": {}},
    }
    stored = repo.add(new_job(task_options=options, result_data={"e+": "e+10"}))
    back = repo.get(stored.id)
    assert back == stored
    assert back is not None
    for key, value in options.items():
        assert type(back.task_options[key]) is type(value), key
    assert back.task_options == options


def test_values_postgresql_cannot_store_are_invalid_argument(repo: PostgresJobRepository) -> None:
    with pytest.raises(InvalidArgument, match="nul"):
        repo.add(new_job(id="nul", source_file_path="/in/a\x00b"))
    with pytest.raises(InvalidArgument, match="nul2"):
        repo.add(new_job(id="nul2", task_options={"s": "a\x00b"}))
    assert repo.count() == 0
    assert repo.add(new_job(id="nul")).version == 1, "the failed call left nothing behind"


def test_statistics_shape_and_size(repo: PostgresJobRepository) -> None:
    repo.add(new_job(content_type="audio"))
    stats = repo.statistics()
    assert set(stats) == {
        "total_jobs",
        "status_counts",
        "content_type_counts",
        "worker_counts",
        "storage_size_mb",
    }
    assert list(stats["status_counts"]) == [s.value for s in JobStatus]
    assert isinstance(stats["storage_size_mb"], float) and stats["storage_size_mb"] > 0


def test_repr_hides_the_password(pg_schema_dsn: str) -> None:
    with_password = pg_schema_dsn.replace("postgres@", "postgres:hunter2@", 1)
    with PostgresJobRepository(with_password) as repo:  # trust auth ignores the password
        assert "hunter2" not in repr(repo)


def test_old_jobs_count_from_the_last_write(repo: PostgresJobRepository) -> None:
    job = repo.add(new_job(status=JobStatus.FAILED))
    assert repo.old_jobs(days_old=7) == []
    query(repo.dsn, "UPDATE remote_jobs SET updated_at = now() - interval '8 days'")
    assert [j.id for j in repo.old_jobs(days_old=7)] == [job.id]
    assert repo.cleanup(days_old=7) == 1


# -- many processes -----------------------------------------------------------------------


def _claim_all(repo_or_dsn: Any, name: str, start: Any, out: Any) -> None:
    claimed: list[tuple[str, int]] = []
    try:
        repo = PostgresJobRepository(repo_or_dsn) if isinstance(repo_or_dsn, str) else repo_or_dsn
        start.wait()
        while (job := repo.claim_next(name, lease_seconds=120)) is not None:
            done = repo.complete(job.id, name, {"by": name}, attempt=job.attempt)
            claimed.append((done.id, done.attempt))
    except Exception as exc:  # reported to the parent, which fails at once
        out.put(f"{name}: {type(exc).__name__}: {exc}")
    else:
        out.put(claimed)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_four_processes_claim_400_jobs_each_exactly_once(
    repo: PostgresJobRepository, pg_schema_dsn: str, method: str
) -> None:
    ids = {repo.add(new_job(content_type="document")).id for _ in range(400)}
    context: Any = multiprocessing.get_context(method)
    start, out = context.Event(), context.Queue()
    # "fork" hands each child the parent's open repository (and its pool): the child must
    # open its own connections rather than share the parent's sockets.
    handle: Any = pg_schema_dsn if method == "spawn" else repo
    processes = [
        context.Process(target=_claim_all, args=(handle, f"w{i}", start, out)) for i in range(4)
    ]
    for process in processes:
        process.start()
    start.set()
    results = [out.get(timeout=120) for _ in processes]
    assert [r for r in results if isinstance(r, str)] == [], "a worker failed"
    claimed = [item for result in results for item in result]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    counts = Counter(job_id for job_id, _ in claimed)
    assert [job_id for job_id, n in counts.items() if n > 1] == []
    assert set(counts) == ids
    assert {attempt for _, attempt in claimed} == {1}
    assert repo.count(status=JobStatus.COMPLETED) == 400
    # The parent's own connections still work after its children used theirs.
    assert repo.get(next(iter(ids))) is not None


# -- db init / migrate / reset / test / create-migration ----------------------------------


def test_db_check_migrate_and_reset(pg_schema_dsn: str) -> None:
    from hybridstore.pgadmin import check_db, migrate_db, reset_db

    expected = len(load_migrations("postgres"))
    fresh = check_db(pg_schema_dsn)
    assert (fresh.version, fresh.expected, fresh.ok, fresh.jobs) == (0, expected, False, None)
    assert "db migrate" in fresh.describe()
    migrated = migrate_db(pg_schema_dsn)
    assert migrated.ok and len(migrated.applied) == expected and migrated.jobs == 0
    assert migrate_db(pg_schema_dsn).applied == []
    with PostgresJobRepository(pg_schema_dsn) as repo:
        repo.add(new_job())
    assert check_db(pg_schema_dsn).jobs == 1
    reset = reset_db(pg_schema_dsn)
    assert reset.ok and reset.jobs == 0 and len(reset.applied) == expected
    assert "up to date" in reset.describe()
    query(pg_schema_dsn, "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
    ahead = check_db(pg_schema_dsn)
    assert not ahead.ok and "newer" in ahead.describe()
    with pytest.raises(SchemaError):
        migrate_db(pg_schema_dsn)


def test_db_init_creates_the_database_and_the_schema(pg_server_dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from hybridstore.pgadmin import init_db

    name = f"hs_init_{uuid.uuid4().hex[:10]}"
    dsn = schema_dsn(make_conninfo(pg_server_dsn, dbname=name), "jobs")
    try:
        status = init_db(dsn)
        assert status.created == [f"database {name}", "schema jobs"]
        assert status.ok and status.schema == "jobs" and status.jobs == 0
        again = init_db(dsn)
        assert again.created == [] and again.applied == []
        with open_repository(dsn) as repo:
            assert (
                repo.add(
                    RemoteJob(ingestion_task_id="t", source_file_path="/f", content_type="x")
                ).version
                == 1
            )
    finally:
        user = conninfo_to_dict(pg_server_dsn).get("user")
        admin = make_conninfo(pg_server_dsn, dbname="postgres", user=user)
        query(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_create_migration_writes_the_next_numbered_template(tmp_path: Path) -> None:
    from hybridstore.pgadmin import create_migration, migrations_dir

    assert sorted(p.name for p in migrations_dir().glob("*.sql"))[0] == "0001_remote_jobs.sql"
    (tmp_path / "0001_remote_jobs.sql").write_text("-- one\n")
    first = create_migration("Add Priority column!", tmp_path)
    assert first.name == "0002_add_priority_column.sql"
    assert "Add Priority column!" in first.read_text()
    assert create_migration("more", tmp_path).name == "0003_more.sql"
    with pytest.raises(InvalidArgument):
        create_migration("  ?? ", tmp_path)
