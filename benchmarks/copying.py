"""``copy`` both ways between a data directory and PostgreSQL: the same jobs, one run.

``python -m benchmarks.copying --jobs 20000`` stores the jobs in a fresh data directory
(``add_many``), copies them into a fresh PostgreSQL schema (files → PostgreSQL), then from
there into a second fresh data directory (PostgreSQL → files), and prints the seconds of
each copy and their ratio. Both copies go through ``hybridstore.copy_jobs`` with its
default batch, as ``hybridstore copy`` does; each target is made durable as it is written.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers import PgSchemas, make_jobs, server_dsn
from benchmarks.provenance import pg_unreachable
from hybridstore import JobStore, copy_jobs, open_repository

__all__ = ["copy_both_ways"]


def copy_both_ways(jobs: int, base: Path, dsn: str) -> dict[str, Any]:
    """Copy ``jobs`` jobs files → PostgreSQL → files; seconds of each copy and counts."""
    schemas = PgSchemas(dsn)
    with schemas.fresh() as schema_dsn, JobStore(base / "source") as source:
        made = make_jobs(jobs)
        for start in range(0, jobs, 1000):
            source.add_many(made[start : start + 1000])
        with open_repository(schema_dsn) as pg:
            started = time.perf_counter()
            to_pg = copy_jobs(source, pg)
            to_pg_seconds = time.perf_counter() - started
            with JobStore(base / "target") as target:
                started = time.perf_counter()
                to_files = copy_jobs(pg, target)
                to_files_seconds = time.perf_counter() - started
                target_count = target.count()
    return {
        "jobs": jobs,
        "files_to_postgres_seconds": round(to_pg_seconds, 3),
        "postgres_to_files_seconds": round(to_files_seconds, 3),
        "ratio": round(to_files_seconds / to_pg_seconds, 2),
        "written": [to_pg.written, to_files.written],
        "target_count": target_count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    dsn = server_dsn()
    problem = pg_unreachable(dsn)
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as base:
        print(json.dumps(copy_both_ways(args.jobs, Path(base), dsn), indent=2))


if __name__ == "__main__":
    main()
