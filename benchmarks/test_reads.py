"""Reads: point reads, set queries, counts and statistics, against the size of the store.

All of them run on the cached store of each size (nothing here writes). The older design
answers the same questions with its own calls; the limit lines are raw SQLite + file reads.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.conftest import BenchData
from benchmarks.dataset import DATASET_NOW

FILTERS = {
    "status": "pending",
    "content_type": "audio",
    "worker": "worker-3",
}


@pytest.mark.impls("hybridstore", "limit", "legacy")
def test_get(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    ids = bench.sample(size).cycle_ids()
    if impl == "hybridstore":
        store = bench.store(size)

        def get() -> Any:
            return store.get(next(ids))
    elif impl == "limit":
        reader = bench.limit_reader(size)

        def get() -> Any:
            return reader.get(next(ids))
    else:
        legacy = bench.legacy(size)

        def get() -> Any:
            return legacy.load_job(next(ids))

    assert get() is not None
    record("get")
    benchmark(get)


@pytest.mark.impls("hybridstore", "limit", "legacy")
def test_find_by_ingestion_task(benchmark: Any, bench: BenchData, record: Any, impl: str,
                                size: int) -> None:
    tasks = bench.sample(size).cycle_task_ids()
    if impl == "hybridstore":
        store = bench.store(size)

        def by_task() -> Any:
            return store.find_by_ingestion_task(next(tasks))
    elif impl == "limit":
        reader = bench.limit_reader(size)

        def by_task() -> Any:
            return reader.by_task(next(tasks))
    else:
        legacy = bench.legacy(size)

        def by_task() -> Any:
            return legacy.find_job_by_ingestion_task(next(tasks))

    assert by_task() is not None
    record("find_by_ingestion_task")
    benchmark(by_task)


@pytest.mark.impls("limit")
def test_read_one_file(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    """Reading and parsing one job file: the yardstick for unlimited queries, per job."""
    paths = bench.sample(size).cycle_paths()
    reader = bench.limit_reader(size)

    def read_one() -> Any:
        return reader.read_one(next(paths))

    record("read_one_file")
    benchmark(read_one)


@pytest.mark.parametrize("field", list(FILTERS))
@pytest.mark.impls("hybridstore")
def test_find_limit_100(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int,
                        field: str) -> None:
    store = bench.store(size)
    column = "worker_id" if field == "worker" else field
    kwargs: dict[str, Any] = {column: FILTERS[field], "limit": 100}
    returned = len(store.find(**kwargs))
    assert returned == min(100, store.count(**{column: FILTERS[field]}))
    record(f"find_{field}_100", returned=returned)
    benchmark(store.find, **kwargs)


@pytest.mark.parametrize("field", list(FILTERS))
@pytest.mark.impls("hybridstore", "legacy")
def test_find_all(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int,
                  field: str) -> None:
    value = FILTERS[field]
    if impl == "hybridstore":
        store = bench.store(size)
        column = "worker_id" if field == "worker" else field

        def find() -> list[Any]:
            filters: dict[str, Any] = {column: value}
            return store.find(**filters)
    else:
        legacy = bench.legacy(size)
        call = {
            "status": legacy.find_jobs_by_status,
            "content_type": legacy.find_jobs_by_content_type,
            "worker": legacy.find_jobs_by_worker,
        }[field]

        def find() -> list[Any]:
            return call(value)

    returned = len(find())
    assert returned > 0
    record(f"find_{field}_all", returned=returned)
    benchmark(find)


@pytest.mark.impls("hybridstore", "legacy")
def test_expired(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    if impl == "hybridstore":
        store = bench.store(size)

        def expired() -> list[Any]:
            return store.expired(now=DATASET_NOW)
    else:
        legacy = bench.legacy(size)

        def expired() -> list[Any]:
            return legacy.get_expired_jobs(now=DATASET_NOW)

    returned = len(expired())
    assert returned > 0
    record("expired", returned=returned)
    benchmark(expired)


@pytest.mark.impls("hybridstore", "legacy")
def test_old_jobs(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    if impl == "hybridstore":
        store = bench.store(size)

        def old_jobs() -> list[Any]:
            return store.old_jobs(days_old=7, now=DATASET_NOW)
    else:
        legacy = bench.legacy(size)

        def old_jobs() -> list[Any]:
            return legacy.get_old_jobs(7, now=DATASET_NOW)

    returned = len(old_jobs())
    assert returned > 0
    record("old_jobs", returned=returned)
    benchmark(old_jobs)


@pytest.mark.parametrize("which", ["status", "all"])
@pytest.mark.impls("hybridstore")
def test_count(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int,
               which: str) -> None:
    store = bench.store(size)
    kwargs: dict[str, Any] = {"status": "pending"} if which == "status" else {}
    assert store.count(**kwargs) > 0
    record(f"count_{which}")
    benchmark(store.count, **kwargs)


@pytest.mark.impls("hybridstore", "legacy")
def test_statistics(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    if impl == "hybridstore":
        call = bench.store(size).statistics
    else:
        call = bench.legacy(size).get_statistics
    assert call()["total_jobs"] >= size
    record("statistics")
    benchmark(call)
