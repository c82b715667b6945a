"""``copy`` both ways at smoke size (``benchmarks/copying.py``): every job arrives, each
direction is timed. Needs PostgreSQL (skipped without it, unless
``HYBRIDSTORE_BENCH_REQUIRE_PG=1``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.copying import copy_both_ways
from benchmarks.peers import server_dsn
from benchmarks.provenance import pg_unreachable

JOBS = 600


def test_copy_both_ways(benchmark: Any, tmp_path: Path) -> None:
    problem = pg_unreachable(server_dsn())
    if problem:
        if os.environ.get("HYBRIDSTORE_BENCH_REQUIRE_PG") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    result = benchmark.pedantic(
        copy_both_ways, args=(JOBS, tmp_path, server_dsn()), rounds=1, iterations=1
    )
    benchmark.extra_info.update(result)
    assert result["written"] == [JOBS, JOBS] and result["target_count"] == JOBS
