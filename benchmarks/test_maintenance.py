"""Maintenance over the whole store: reindex (rebuild the sidecar from the files) and verify."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.conftest import BenchData
from benchmarks.limits import limit_reindex


def _heavy_rounds(bench: BenchData, size: int) -> int:
    return bench.rounds(3 if size >= 50_000 else 5, 1)


@pytest.mark.impls("hybridstore", "limit")
def test_reindex(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    """Rebuild the index of every job from the files (the work copy: reindex writes)."""
    record("reindex", jobs=size)
    if impl == "hybridstore":
        store = bench.work_store(size)
        report = benchmark.pedantic(store.reindex, rounds=_heavy_rounds(bench, size),
                                    warmup_rounds=0)
        assert report.indexed >= size
        assert not [p for p in report.skipped if p.kind != "foreign"]
    else:
        data_dir = bench.work_dir(size)
        db_path = bench.scratch(size, "reindex") / "limit-reindex.sqlite3"

        def fresh() -> None:
            for suffix in ("", "-wal", "-shm"):
                db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)

        indexed = benchmark.pedantic(limit_reindex, args=(data_dir, db_path), setup=fresh,
                                     rounds=_heavy_rounds(bench, size), warmup_rounds=0)
        assert indexed is None or indexed >= size
        fresh()


@pytest.mark.impls("hybridstore")
def test_verify(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    """Compare every file with the sidecar (read-only: the cached store)."""
    store = bench.store(size)
    record("verify", jobs=size)
    report = benchmark.pedantic(store.verify, rounds=_heavy_rounds(bench, size),
                                warmup_rounds=0)
    assert report.ok, report.drift[:5]
