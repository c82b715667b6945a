"""File store vs PostgreSQL: the same repository calls on ``JobStore`` (durable) and on
``PostgresJobRepository``, back to back, on the same population.

Operations: durable ``add``, ``get``, ``find(status=pending, limit=100)``,
``find(content_type=audio)`` without a limit, and ``claim_next`` with 4 processes.

The file store side is the suite's own: reads on the cached store of each size, writes and
claims on the per-session work copy (``BenchData``). The PostgreSQL side gets one schema per
size, named after this run (``hs_bench_<run>_<size>``), loaded with the same generated jobs
through ``import_jobs``, then ``VACUUM (ANALYZE)``-ed (the planner needs statistics, and
autovacuum may be off), and dropped when the session ends. Reads run before writes in this
module, so both backends answer them on the same, unchanged population (checked).

The server is ``$HYBRIDSTORE_BENCH_PG_DSN``, else ``$HYBRIDSTORE_TEST_PG_DSN``, else
``postgresql://postgres@127.0.0.1:5432/test``. When it cannot be reached (or psycopg is not
installed) the PostgreSQL benchmarks skip with the reason; ``HYBRIDSTORE_BENCH_REQUIRE_PG=1``
turns that into a failure, so that a full run cannot silently lose the comparison.

Like every write benchmark of the suite, each write round starts with an untimed
``os.sync()``: it also writes out the server's dirty pages, so neither side pays for the
other's unsynced writes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.claimers import ClaimPool, repository_claimer, restore_claimed, synced
from benchmarks.conftest import BenchData
from benchmarks.dataset import generate_jobs, new_job
from benchmarks.provenance import require_pg
from hybridstore import JobStore
from hybridstore.repository import JobRepository

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("hybridstore", "postgres")
LOAD_BATCH = 2000
CLAIMER = "backend-claimer-{}"
CLAIM_PROCESSES = 4
FIND_STATUS = "pending"
FIND_CONTENT_TYPE = "audio"
# Server settings that decide what a commit costs, recorded with every PostgreSQL result.
PG_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
               "shared_buffers", "autovacuum")


def server_dsn() -> str:
    return (os.environ.get("HYBRIDSTORE_BENCH_PG_DSN") or os.environ.get("HYBRIDSTORE_TEST_PG_DSN")
            or DEFAULT_DSN)


class PgData:
    """One schema per size for this run: created and loaded on first use, dropped at close."""

    def __init__(self, bench: BenchData, dsn: str) -> None:
        from hybridstore.config import describe_target

        self.bench = bench
        self.dsn = dsn
        self.run = f"hs_bench_{uuid.uuid4().hex[:10]}"
        self.schemas: list[str] = []
        self._repos: dict[int, Any] = {}
        self._dsns: dict[int, str] = {}
        self.server = self._server_info(describe_target(dsn))

    def _server_info(self, where: str) -> dict[str, Any]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            settings = {}
            for name in PG_SETTINGS:
                found = conn.execute(
                    "SELECT setting, unit FROM pg_settings WHERE name = %s", (name,)
                ).fetchone()
                if found is not None:
                    settings[name] = _setting(*found)
        return {"pg_server": where, "pg_version": row[0] if row else "?",
                "pg_settings": settings}

    def schema_dsn(self, size: int) -> str:
        """The DSN of this size's schema, loaded with the size's population."""
        if size not in self._dsns:
            import psycopg

            from tests.postgres_support import schema_dsn

            schema = f"{self.run}_{size}"
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            self.schemas.append(schema)
            dsn = schema_dsn(self.dsn, schema)
            self._load(dsn, size)
            self._dsns[size] = dsn
        return self._dsns[size]

    def _load(self, dsn: str, size: int) -> None:
        import psycopg

        from hybridstore.postgres import PostgresJobRepository

        started = time.perf_counter()
        with PostgresJobRepository(dsn) as repo:
            jobs = generate_jobs(size)
            while batch := list(itertools.islice(jobs, LOAD_BATCH)):
                result = repo.import_jobs(batch)
                assert result.written == len(batch), result
            counts = repo.statistics()["status_counts"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) remote_jobs")
        expected = self.bench.manifest(size)["status_counts"]
        assert counts == expected, f"PostgreSQL holds {counts}, the file store {expected}"
        _log(f"loaded {size:,} jobs into PostgreSQL schema {dsn.rsplit('%3D', 1)[-1]}"
                f" in {time.perf_counter() - started:.1f} s")

    def repo(self, size: int) -> Any:
        """An open repository on this size's schema (one per size, closed at the end)."""
        if size not in self._repos:
            from hybridstore.postgres import PostgresJobRepository

            self._repos[size] = PostgresJobRepository(self.schema_dsn(size))
        return self._repos[size]

    def close(self) -> None:
        for repo in self._repos.values():
            with contextlib.suppress(Exception):
                repo.close()
        if not self.schemas:
            return
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _setting(value: str, unit: str | None) -> str:
    if unit == "8kB" and value.isdigit():  # shared_buffers and friends, in pages
        mb = int(value) * 8 / 1024
        return f"{mb:g}MB"
    return f"{value}{unit or ''}"


def _log(message: str) -> None:
    sys.stderr.write(f"\n[bench] {message}\n")
    sys.stderr.flush()


@pytest.fixture(scope="session")
def pg(bench: BenchData) -> Iterator[PgData]:
    """The PostgreSQL side, or a skip (a failure with HYBRIDSTORE_BENCH_REQUIRE_PG=1)."""
    dsn = server_dsn()
    require_pg(dsn)
    data = PgData(bench, dsn)
    yield data
    data.close()


def _reader(request: pytest.FixtureRequest, bench: BenchData, impl: str,
            size: int) -> JobRepository:
    """The repository a read benchmark queries (nothing here writes to it)."""
    if impl == "hybridstore":
        return bench.store(size)
    pg: PgData = request.getfixturevalue("pg")
    return pg.repo(size)


def _label(request: pytest.FixtureRequest, benchmark: Any, impl: str) -> None:
    if impl == "postgres":
        pg: PgData = request.getfixturevalue("pg")
        benchmark.extra_info.update(pg.server)


# -- reads (first: both backends still hold exactly the generated population) -------------


@pytest.mark.impls(*BACKENDS)
def test_backend_get(benchmark: Any, bench: BenchData, record: Any, request: pytest.FixtureRequest,
                     impl: str, size: int) -> None:
    repo = _reader(request, bench, impl, size)
    ids = bench.sample(size).cycle_ids()

    def get() -> Any:
        return repo.get(next(ids))

    for _ in bench.sample(size).ids:  # one untimed pass: the sample's pages and files cached
        assert get() is not None
    record("backend_get")
    _label(request, benchmark, impl)
    benchmark(get)


@pytest.mark.impls(*BACKENDS)
def test_backend_find_status_100(benchmark: Any, bench: BenchData, record: Any,
                                 request: pytest.FixtureRequest, impl: str, size: int) -> None:
    repo = _reader(request, bench, impl, size)
    expected = [job.id for job in bench.store(size).find(status=FIND_STATUS, limit=100)]
    assert [job.id for job in repo.find(status=FIND_STATUS, limit=100)] == expected
    record("backend_find_status_100", returned=len(expected))
    _label(request, benchmark, impl)
    benchmark(repo.find, status=FIND_STATUS, limit=100)


@pytest.mark.impls(*BACKENDS)
def test_backend_find_content_type_all(benchmark: Any, bench: BenchData, record: Any,
                                       request: pytest.FixtureRequest, impl: str,
                                       size: int) -> None:
    repo = _reader(request, bench, impl, size)
    returned = len(repo.find(content_type=FIND_CONTENT_TYPE))
    assert returned == bench.store(size).count(content_type=FIND_CONTENT_TYPE) > 0
    record("backend_find_content_type_all", returned=returned)
    _label(request, benchmark, impl)
    benchmark(repo.find, content_type=FIND_CONTENT_TYPE)


# -- writes -------------------------------------------------------------------------------


@pytest.mark.impls(*BACKENDS)
def test_backend_add(benchmark: Any, bench: BenchData, record: Any, request: pytest.FixtureRequest,
                     impl: str, size: int) -> None:
    """A durable insert of a new job (the same job sequence on both backends)."""
    rng = random.Random(f"backend-add-{size}")
    n_rounds = bench.rounds(300, 5)
    if impl == "hybridstore":
        repo: JobRepository = bench.work_store(size, durable=True)
    else:
        pg: PgData = request.getfixturevalue("pg")
        repo = pg.repo(size)
    before = repo.count()

    def setup() -> Any:
        return (new_job(rng),), {}

    record("backend_add")
    _label(request, benchmark, impl)
    benchmark.pedantic(repo.add, setup=synced(setup), rounds=n_rounds, warmup_rounds=1)
    if benchmark.stats is not None:
        assert repo.count() == before + n_rounds + 1


@pytest.mark.impls(*BACKENDS)
def test_backend_claim_4p(benchmark: Any, bench: BenchData, record: Any,
                          request: pytest.FixtureRequest, impl: str, size: int) -> None:
    """4 real processes released together by a barrier, each claiming its quota; a round's
    time is the wall-clock time of all its claims (as ``test_writes.test_claim``)."""
    pending_jobs = bench.manifest(size)["status_counts"]["pending"]
    quota = 50 if not bench.quick else 10
    quota = min(quota, pending_jobs // CLAIM_PROCESSES // 2 * 2 or 1)
    claims = quota * CLAIM_PROCESSES
    n_rounds = bench.rounds(10, 2)
    if impl == "hybridstore":
        parent: JobRepository = bench.work_store(size, durable=False)  # for restoring only
        work_dir = bench.work_dir(size)
        factory = repository_claimer(lambda: JobStore(work_dir, durable=True), CLAIMER)
    else:
        from hybridstore.postgres import PostgresJobRepository

        pg: PgData = request.getfixturevalue("pg")
        parent = pg.repo(size)
        dsn = pg.schema_dsn(size)
        factory = repository_claimer(
            lambda: PostgresJobRepository(dsn, max_connections=1), CLAIMER
        )
    restore_claimed(parent, CLAIMER, CLAIM_PROCESSES)

    record("backend_claim_4p", ops=claims, processes=CLAIM_PROCESSES, quota=quota)
    _label(request, benchmark, impl)
    def setup() -> None:  # returns nothing: pedantic would take a value for arguments
        restore_claimed(parent, CLAIMER, CLAIM_PROCESSES)

    with ClaimPool(CLAIM_PROCESSES, quota, factory) as pool:
        benchmark.pedantic(pool.run_round, setup=synced(setup), rounds=n_rounds,
                           warmup_rounds=1)
        pool.check()
    restore_claimed(parent, CLAIMER, CLAIM_PROCESSES)
    if benchmark.stats is not None:
        benchmark.extra_info["claims_per_s"] = round(claims / benchmark.stats.stats.median, 1)
