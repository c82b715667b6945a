"""The ``repo`` fixture: every contract test runs once per backend.

Add a backend here and the whole suite runs over it unchanged. The PostgreSQL backend gets
a fresh schema per test (see ``tests/postgres_support.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hybridstore import JobRepository, JobStore
from hybridstore.memory import MemoryJobRepository

BACKENDS = [
    pytest.param("file", id="file"),
    pytest.param("memory", id="memory"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


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
