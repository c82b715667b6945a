"""Claims with delayed jobs ahead (issue 12): ``claim_next`` of the one ready job in a store
that also holds 10,000 delayed jobs, beside the same claim in the same store without them,
on the file store (``JobStore``, durable) and on PostgreSQL (``PostgresJobRepository``).

The delayed jobs are pending, with ``not_before`` far in the future, a higher ``priority``
and an older ``created_at`` than the ready job: in claim order (highest priority, then
oldest) every one of them comes before it, so a claim that scanned pending jobs, or read
them in claim order and skipped those not yet due, would pay for all 10,000. Issue 12's
target: with them, the claim costs at most 1.5 × what it costs without them.

Each backend gets stores of its own, not the suite's population (whose pending jobs are
ready, and would be claimed first): the ready job alone, and the ready job behind the
delayed jobs. The file stores are written straight to disk and indexed by opening them,
like the suite's (``benchmarks/dataset.py``), in the session directory; the PostgreSQL
side gets one schema per store, named after the run (``hs_bench_claims_<run>_<delayed>``),
loaded through ``import_jobs``, ``VACUUM (ANALYZE)``-ed and dropped at the end. The
server, and what happens without one, are as in ``test_backends.py``.

A round is one claim (timed), checked to return the ready job; its untimed setup puts the
job back as it was added (``save`` of the pending copy: no worker, no lease, attempt 0),
then ``os.sync()`` as in every write benchmark of the suite. The smoke run
(``HYBRIDSTORE_BENCH_QUICK=1``) puts 1,000 delayed jobs ahead instead of 10,000.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks.claimers import synced
from benchmarks.conftest import BenchData
from benchmarks.dataset import DATASET_NOW, new_job, write_store_files
from benchmarks.provenance import require_pg
from benchmarks.test_backends import LOAD_BATCH, server_dsn
from hybridstore import JobStatus, JobStore, RemoteJob
from hybridstore.repository import JobRepository

BACKENDS = ("hybridstore", "postgres")
BACKEND_LABEL = {"hybridstore": "file store", "postgres": "PostgreSQL"}
DELAYED = 10_000
QUICK_DELAYED = 1_000
# Ahead of the ready job in claim order: higher priority, older, and not due for decades.
DELAYED_PRIORITY = 5
NOT_BEFORE = datetime(2100, 1, 1, tzinfo=UTC)
WORKER = "bench-delayed-claimer"


def delayed_count(bench: BenchData) -> int:
    return QUICK_DELAYED if bench.quick else DELAYED


def ready_job() -> RemoteJob:
    """The one ready job: default priority, created after every delayed job."""
    return new_job(random.Random("claims-ready"), created_at=DATASET_NOW)


def delayed_jobs(n: int) -> Iterator[RemoteJob]:
    rng = random.Random(f"claims-delayed-{n}")
    first = DATASET_NOW - timedelta(days=1)
    for i in range(n):
        yield new_job(rng, created_at=first + timedelta(seconds=i), not_before=NOT_BEFORE,
                      priority=DELAYED_PRIORITY)


def _log(message: str) -> None:
    sys.stderr.write(f"\n[bench] {message}\n")
    sys.stderr.flush()


class ClaimStores:
    """The stores of this module, per backend and number of delayed jobs: built on first
    use, closed (and the PostgreSQL schemas dropped) at the end of the module."""

    def __init__(self, bench: BenchData) -> None:
        self.bench = bench
        self.run = f"hs_bench_claims_{uuid.uuid4().hex[:10]}"
        self._repos: dict[tuple[str, int], JobRepository] = {}
        self._schemas: list[str] = []
        self._dsn: str | None = None

    def repo(self, backend: str, delayed: int) -> JobRepository:
        """The store of ``backend`` with ``delayed`` delayed jobs ahead. Both stores of a
        backend are built on the first call, so neither measurement runs right after the
        other's load (its writes still being flushed, a checkpoint under way)."""
        if (backend, delayed) not in self._repos:
            for ahead in sorted({0, delayed_count(self.bench)}):
                started = time.perf_counter()
                self._repos[(backend, ahead)] = (
                    self._file_store(ahead) if backend == "hybridstore" else self._postgres(ahead)
                )
                _log(f"{BACKEND_LABEL[backend]}: one ready job behind {ahead:,} delayed jobs,"
                     f" built in {time.perf_counter() - started:.1f} s")
            if backend == "postgres":
                self._checkpoint()
            os.sync()
        return self._repos[(backend, delayed)]

    def _file_store(self, delayed: int) -> JobStore:
        path: Path = self.bench.session_dir / f"claims-delayed-{delayed}"
        write_store_files(path, [*delayed_jobs(delayed), ready_job()])
        store = JobStore(path, durable=True)  # finds no sidecar: indexes the files
        self._check(store, delayed)
        return store

    def _postgres(self, delayed: int) -> JobRepository:
        import psycopg

        from hybridstore.postgres import PostgresJobRepository
        from tests.postgres_support import schema_dsn

        dsn = server_dsn()
        require_pg(dsn)
        self._dsn = dsn
        schema = f"{self.run}_{delayed}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self._schemas.append(schema)
        repo = PostgresJobRepository(schema_dsn(dsn, schema))
        jobs = itertools.chain(delayed_jobs(delayed), [ready_job()])
        while batch := list(itertools.islice(jobs, LOAD_BATCH)):
            result = repo.import_jobs(batch)
            assert result.written == len(batch), result
        with psycopg.connect(schema_dsn(dsn, schema), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) remote_jobs")
        self._check(repo, delayed)
        return repo

    def _checkpoint(self) -> None:
        """Write out the server's dirty pages now rather than during a measurement (a
        superuser's right: skipped when refused)."""
        import psycopg

        assert self._dsn is not None
        with psycopg.connect(self._dsn, autocommit=True) as conn, contextlib.suppress(
            psycopg.Error
        ):
            conn.execute("CHECKPOINT")

    @staticmethod
    def _check(repo: JobRepository, delayed: int) -> None:
        counts = repo.statistics()["status_counts"]
        assert counts.get("pending") == delayed + 1 == repo.count(), counts

    def close(self) -> None:
        for repo in self._repos.values():
            with contextlib.suppress(Exception):
                repo.close()
        if self._dsn is None or not self._schemas:
            return
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True) as conn:
            for schema in self._schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="module")
def stores(bench: BenchData) -> Iterator[ClaimStores]:
    built = ClaimStores(bench)
    yield built
    built.close()


# Each backend's two cases back to back (without, then with), so their ratio compares
# measurements taken seconds apart on a shared machine.
@pytest.mark.parametrize("ahead", [False, True], ids=["without-delayed", "with-delayed"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_claim_behind_delayed(benchmark: Any, bench: BenchData, stores: ClaimStores,
                              backend: str, ahead: bool) -> None:
    """One ``claim_next`` of the one ready job, with or without the delayed jobs ahead."""
    delayed = delayed_count(bench) if ahead else 0
    repo = stores.repo(backend, delayed)
    ready = ready_job()
    stored = repo.get(ready.id)
    assert stored is not None and stored.status is JobStatus.PENDING

    def put_back() -> None:
        repo.save(stored)

    def claim() -> None:
        job = repo.claim_next(WORKER, lease_seconds=3600)
        if job is None or job.id != ready.id:
            raise RuntimeError(f"claimed {job and job.id}, not the ready job {ready.id}")

    benchmark.group = f"claim_next of the one ready job, {BACKEND_LABEL[backend]}"
    benchmark.extra_info.update(op="claim_delayed", impl=backend, size=delayed,
                                delayed=delayed, ops_per_round=1)
    benchmark.pedantic(claim, setup=synced(put_back), rounds=bench.rounds(200, 5),
                       warmup_rounds=1)
    put_back()
    assert repo.count(status=JobStatus.PENDING) == delayed + 1
