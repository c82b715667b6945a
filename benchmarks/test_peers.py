"""The peers comparison (``benchmarks/peers.py``) at smoke size: it runs, and it counts.

One repetition of every implementation with ``PEERS_SMOKE_JOBS`` jobs and 4 worker
processes (PostgreSQL included when a server answers; ``HYBRIDSTORE_BENCH_REQUIRE_PG=1``
makes its absence a failure). It goes through pytest-benchmark (one round), so that
``--benchmark-only`` runs, like ``scripts/bench_smoke.sh``, include it; its figures are
not the report's (the full comparison is ``python scripts/bench_peers.py``).

What must hold whatever the machine: every hybridstore variant hands out each job exactly
once and ends with every job completed; every peer hands out every job at least once and
ends with every job finished; the duplicate count is the deliveries beyond the first.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.peers import PeersRun, server_dsn
from benchmarks.provenance import pg_unreachable

PEERS_SMOKE_JOBS = 200
PROCS = 4


def test_peers_smoke(benchmark: Any, tmp_path: Any) -> None:
    base = tmp_path if os.environ.get("HYBRIDSTORE_BENCH_CACHE") is None else None
    runner = PeersRun(jobs=PEERS_SMOKE_JOBS, procs=PROCS, reps=1, base_dir=base)
    data = benchmark.pedantic(runner.run, rounds=1, iterations=1)
    benchmark.extra_info.update(peers_smoke=True, jobs=PEERS_SMOKE_JOBS, procs=PROCS)

    pg_expected = pg_unreachable(server_dsn()) is None
    keys = set(data["enqueue"]) | set(data["take_finish"])
    assert {"hs_add", "hs_add_many", "huey_enqueue", "pq_put", "legacy_save",
            "hs_claim", "hs_claim_many", "huey_dequeue", "pq_get_ack"} <= keys
    assert ({"pg_add", "pg_claim", "pg_claim_many"} <= keys) == pg_expected, data["skipped"]

    for key, entry in data["enqueue"].items():
        assert entry["median"] > 0, key
    for key, entry in data["take_finish"].items():
        (result,) = entry["runs"]
        assert result["unique"] == PEERS_SMOKE_JOBS and result["missing"] == 0, (key, result)
        assert result["duplicates"] == result["deliveries"] - result["unique"], (key, result)
        assert sum(result["per_worker"]) == result["deliveries"], (key, result)
        assert result["finished"] == PEERS_SMOKE_JOBS, (key, result)
        if entry["impl"] in ("hybridstore", "hybridstore-nondurable", "postgres"):
            assert result["duplicates"] == 0, (key, result)
            assert result["deliveries"] == PEERS_SMOKE_JOBS, (key, result)
