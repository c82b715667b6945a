"""The ``repo`` fixture: every contract test runs once per backend.

Add a backend here and the whole suite runs over it unchanged. The PostgreSQL backend gets
a fresh schema per test (see ``tests/postgres_support.py``).

The two HTTP backends are ``HttpJobRepository`` clients of a real ``hybridstore serve``
process, one on a data directory and one on PostgreSQL, started once per session (a server
per test would cost a second each); each test starts on an empty store, emptied directly
on the server's data directory or schema before it runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hybridstore import JobRepository, JobStore
from hybridstore.memory import MemoryJobRepository
from tests.http_support import ADMIN_TOKEN, ServerProcess
from tests.postgres_support import require_server, schema_dsn, server_dsn

BACKENDS = [
    pytest.param("file", id="file"),
    pytest.param("memory", id="memory"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("http", id="http"),
    pytest.param("http-postgres", id="http-postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def http_file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("http-file")
    server = ServerProcess(str(root / "data"), root / "server.log")
    server.data_dir = root / "data"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http_postgres_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    import psycopg

    require_server()
    schema = f"hs_http_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = schema_dsn(server_dsn(), schema)
    root = tmp_path_factory.mktemp("http-postgres")
    try:
        server = ServerProcess(dsn, root / "server.log")
        yield server, dsn
        server.stop()
    finally:
        with psycopg.connect(server_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _empty_data_dir(path: Path) -> None:
    with JobStore(path, durable=False) as direct:
        for job in direct.find():
            direct.delete(job.id)


def _empty_schema(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE remote_jobs")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def repo_factory(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], JobRepository]]:
    """Opens another handle on the same repository (for multi-process tests: a target
    string that ``hybridstore.open_repository`` understands is ``repo_target``)."""
    opened: list[JobRepository] = []
    if backend == "file":
        target = str(tmp_path / "data")

        def factory() -> JobRepository:
            opened.append(JobStore(target))
            return opened[-1]

    elif backend == "memory":
        shared = MemoryJobRepository()
        target = ""

        def factory() -> JobRepository:
            return shared

    elif backend.startswith("http"):
        from hybridstore import HttpJobRepository

        if backend == "http":
            server: ServerProcess = request.getfixturevalue("http_file_server")
            _empty_data_dir(server.data_dir)  # type: ignore[attr-defined]
        else:
            server, dsn = request.getfixturevalue("http_postgres_server")
            _empty_schema(dsn)
        target = server.url
        # Worker processes opening ``open_repository(target)`` find the token here.
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("HYBRIDSTORE_TOKEN", ADMIN_TOKEN)

        def factory() -> JobRepository:
            opened.append(HttpJobRepository(target, token=ADMIN_TOKEN))
            return opened[-1]

    else:
        target = request.getfixturevalue("pg_schema_dsn")

        def factory() -> JobRepository:
            from hybridstore import PostgresJobRepository

            opened.append(PostgresJobRepository(target))
            return opened[-1]

    factory.target = target  # type: ignore[attr-defined]
    yield factory
    for handle in opened:
        handle.close()


@pytest.fixture
def repo(repo_factory: Callable[[], JobRepository]) -> JobRepository:
    return repo_factory()


@pytest.fixture
def repo_target(repo_factory: Callable[[], JobRepository], backend: str) -> str:
    if backend == "memory":
        pytest.skip("the in-memory repository lives in one process")
    return str(repo_factory.target)  # type: ignore[attr-defined]
