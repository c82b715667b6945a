"""``copy`` both ways at smoke size (``benchmarks/copying.py``): every job arrives, each
direction is timed. Needs PostgreSQL (skipped without it, unless
``HYBRIDSTORE_BENCH_REQUIRE_PG=1``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.copying import copy_both_ways
from benchmarks.peers import server_dsn
from benchmarks.provenance import require_pg

JOBS = 600


def test_copy_both_ways(benchmark: Any, tmp_path: Path) -> None:
    require_pg(server_dsn())
    result = benchmark.pedantic(
        copy_both_ways, args=(JOBS, tmp_path, server_dsn()), rounds=1, iterations=1
    )
    benchmark.extra_info.update(result)
    assert result["written"] == [JOBS, JOBS] and result["target_count"] == JOBS
