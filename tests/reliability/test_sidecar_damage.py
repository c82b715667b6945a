"""The sidecar is derived data: whatever happens to it, no job is lost.

Deleted (with and without its -wal/-shm, while closed and while open), truncated,
overwritten with garbage, corrupted inside, of an older schema (rebuilt from the files), of
a newer schema (``SchemaError``, nothing touched), rebuilt while four processes write.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from hybridstore import JobStore, SchemaError
from hybridstore.migrations import load_migrations
from hybridstore.sidecar import SIDECAR_NAME
from tests.conftest import downgrade_sidecar

from ._support import assert_consistent, make_job, snapshot


def _filled(data_dir: Path, n: int = 12) -> dict[str, tuple[str, int]]:
    """A store with jobs in several statuses; returns id -> (status, version)."""
    with JobStore(data_dir) as store:
        for i in range(n):
            store.add(make_job(f"s{i:03d}", content_type="audio" if i % 2 else "document"))
        for _ in range(4):
            got = store.claim_next("w")
            assert got is not None
        store.complete("s000", "w", {"ok": True})
        store.fail("s001", "w", "boom")
        store.cancel("s011")
        return {j.id: (j.status.value, j.version) for j in store.find()}


def _state(store: JobStore) -> dict[str, tuple[str, int]]:
    return {j.id: (j.status.value, j.version) for j in assert_consistent(store).values()}


def _sidecar(data_dir: Path) -> Path:
    return data_dir / SIDECAR_NAME


def _check_all_back(data_dir: Path, expected: dict[str, tuple[str, int]]) -> None:
    with JobStore(data_dir) as store:
        assert _state(store) == expected
        # Queries answered from the rebuilt index agree with the files.
        assert store.count(status="processing") == sum(
            1 for s, _ in expected.values() if s == "processing"
        )
        assert store.claim_next("after") is not None


@pytest.mark.parametrize("with_wal", [True, False], ids=["with-wal-shm", "main-file-only"])
def test_deleted_sidecar_is_rebuilt(data_dir: Path, with_wal: bool) -> None:
    expected = _filled(data_dir)
    # Keep a -wal/-shm that belongs to the deleted database: it must not be replayed.
    holder = JobStore(data_dir)
    holder.add(make_job("late"))
    expected["late"] = ("pending", 1)
    wal = Path(f"{_sidecar(data_dir)}-wal")
    shm = Path(f"{_sidecar(data_dir)}-shm")
    saved_wal = wal.read_bytes() if wal.exists() else b""
    holder.close()
    _sidecar(data_dir).unlink()
    for path in (wal, shm):
        path.unlink(missing_ok=True)
    if not with_wal:
        wal.write_bytes(saved_wal)  # a stale WAL of the old database, left behind
        shm.write_bytes(b"\0" * 32768)
    _check_all_back(data_dir, expected)


def test_sidecar_deleted_while_stores_are_open(data_dir: Path) -> None:
    expected = _filled(data_dir)
    first, second = JobStore(data_dir), JobStore(data_dir)
    try:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{_sidecar(data_dir)}{suffix}").unlink(missing_ok=True)
        # The next call of each open store notices and reopens (rebuilding once).
        added = first.add(make_job("after-delete"))
        expected[added.id] = ("pending", 1)
        assert {j.id for j in second.find()} == set(expected)
        assert _state(first) == expected
        assert _state(second) == expected
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("how", ["half", "header-only", "few-bytes", "garbage", "zeros"])
def test_unusable_sidecar_is_moved_aside_and_rebuilt(data_dir: Path, how: str) -> None:
    expected = _filled(data_dir, 40)
    path = _sidecar(data_dir)
    size = path.stat().st_size
    assert size > 8192
    if how == "half":
        os.truncate(path, size // 2)
    elif how == "header-only":
        os.truncate(path, 100)
    elif how == "few-bytes":
        os.truncate(path, 7)
    elif how == "garbage":
        path.write_bytes(os.urandom(size))
    else:
        path.write_bytes(b"\0" * size)
    damaged = path.read_bytes()
    _check_all_back(data_dir, expected)
    # The damaged file is kept for inspection, byte for byte, never silently dropped.
    aside = list(data_dir.glob(f"{SIDECAR_NAME}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged


def test_sidecar_with_corrupt_pages_inside_is_rebuilt(data_dir: Path) -> None:
    """A valid header but garbage pages: found by the health check, not by a query later."""
    expected = _filled(data_dir, 60)
    path = _sidecar(data_dir)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), page):  # every page but the first
        data[offset : offset + page] = os.urandom(min(page, len(data) - offset))
    path.write_bytes(bytes(data))
    _check_all_back(data_dir, expected)


def test_older_schema_is_migrated_and_rebuilt_from_the_files(data_dir: Path) -> None:
    """Only migration 1 applied, and its rows out of date: opening brings the schema up
    and re-derives the rows from the files (the contract: rebuilt when of an older
    schema), so nothing written after the old index is missing."""
    expected = _filled(data_dir)
    downgrade_sidecar(_sidecar(data_dir), 1)
    conn = sqlite3.connect(_sidecar(data_dir))
    conn.execute("DELETE FROM jobs WHERE id IN ('s002', 's003')")  # rows it never had
    conn.execute("UPDATE jobs SET status = 'pending', version = 0 WHERE id = 's000'")
    conn.commit()
    conn.close()
    with JobStore(data_dir) as store:
        assert store.schema_version == len(load_migrations("sidecar"))
        assert _state(store) == expected


def test_newer_schema_is_refused_and_nothing_is_touched(data_dir: Path) -> None:
    _filled(data_dir)
    conn = sqlite3.connect(_sidecar(data_dir))
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2030-01-01')")
    conn.commit()
    conn.close()
    before = snapshot(data_dir)
    with pytest.raises(SchemaError, match="newer"):
        JobStore(data_dir)
    after = snapshot(data_dir)

    def kept(tree: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
        # Lock files and SQLite's own -wal/-shm may appear; every job file and the
        # sidecar itself are exactly as they were (not migrated, not moved aside).
        return {
            k: v
            for k, v in tree.items()
            if not k.startswith(".locks") and not k.endswith(("-wal", "-shm"))
        }

    assert kept(after) == kept(before)
    assert SIDECAR_NAME in kept(after)


# -- rebuilt while four processes write -----------------------------------------------------


def _writer(data_dir: str, log_path: str, name: str, count: int) -> None:
    store = JobStore(data_dir)
    with open(log_path, "w") as log:
        for i in range(count):
            job = store.add(make_job(f"{name}-{i:04d}"))
            log.write(f"{job.id} {job.version}\n")
            if i % 3 == 0:
                got = store.claim_next(name)
                if got is not None:
                    done = store.complete(got.id, name)
                    log.write(f"{done.id} {done.version}\n")
            log.flush()
    store.close()


@pytest.mark.slow
def test_reindex_and_sidecar_deletion_while_four_processes_write(data_dir: Path) -> None:
    """Four writer processes; meanwhile this one rebuilds the index over and over, and every
    fifth time deletes the sidecar (with its -wal/-shm) outright, as an operator might.
    No writer fails, every acknowledged write is in the index at the end, verify is clean."""
    per_writer = 150
    JobStore(data_dir).close()
    ctx = multiprocessing.get_context("fork")
    logs = [data_dir.parent / f"writer{i}.log" for i in range(4)]
    procs = [
        ctx.Process(target=_writer, args=(str(data_dir), str(logs[i]), f"p{i}", per_writer))
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    rebuilds = deletions = 0
    with JobStore(data_dir) as store:
        while any(p.is_alive() for p in procs):
            if rebuilds % 5 == 4:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{_sidecar(data_dir)}{suffix}").unlink(missing_ok=True)
                deletions += 1
            report = store.reindex()
            assert [p for p in report.skipped if p.kind != "temp"] == []
            rebuilds += 1
            time.sleep(0.02)
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    assert rebuilds >= 10 and deletions >= 2, (rebuilds, deletions)
    acked: dict[str, int] = {}
    for log in logs:
        for line in log.read_text().split("\n"):
            if line:
                job_id, version = line.split()
                acked[job_id] = max(acked.get(job_id, 0), int(version))
    assert len(acked) == 4 * per_writer
    with JobStore(data_dir) as store:
        jobs = assert_consistent(store)  # the index (find) holds exactly the files' jobs
        for job_id, version in acked.items():
            assert job_id in jobs, f"{job_id} lost"
            assert jobs[job_id].version >= version


def test_write_racing_a_sidecar_deletion_and_rebuild_is_not_hidden(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar is deleted and rebuilt by another process between a write's intent and
    its file step: the write's row went to the deleted database. The writer notices and
    re-derives the job in the new sidecar, so find() and claim_next() see it at once."""
    import hybridstore.journal as store_module

    store = JobStore(data_dir)
    original = store_module.write_many

    def racing(files: list[tuple[Path, str, bytes]], **options: Any) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{_sidecar(data_dir)}{suffix}").unlink(missing_ok=True)
        JobStore(data_dir).close()  # "another process" rebuilds: the job is not there yet
        original(files, **options)

    monkeypatch.setattr(store_module, "write_many", racing)
    added = store.add(make_job("raced"))
    monkeypatch.setattr(store_module, "write_many", original)
    with JobStore(data_dir) as other:
        assert [j.id for j in other.find()] == [added.id]
        assert other.claim_next("w") is not None
        assert_consistent(other)
    store.close()


@pytest.mark.parametrize("shape", ["no-migrations-table", "other-migrations", "no-jobs-table"])
def test_another_tools_database_in_the_sidecars_place_is_moved_aside(
    data_dir: Path, shape: str
) -> None:
    """Found by an outside attack: a foreign SQLite file with a ``schema_migrations`` table
    gave ``unexpected OperationalError: no such table``. Now it is named for what it is,
    moved aside whole, and the sidecar is rebuilt from the files."""
    expected = _filled(data_dir)
    _sidecar(data_dir).unlink()
    conn = sqlite3.connect(_sidecar(data_dir))
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users VALUES (1, 'alice')")
    if shape != "no-migrations-table":
        conn.execute(
            "CREATE TABLE schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
        )
        name = "create_users" if shape == "other-migrations" else load_migrations("sidecar")[0].name
        conn.execute("INSERT INTO schema_migrations VALUES (1, ?, 'then')", (name,))
    conn.commit()
    conn.close()
    _check_all_back(data_dir, expected)
    aside = list(data_dir.glob(f"{SIDECAR_NAME}.*-*"))
    assert len(aside) == 1
    kind = "corrupt" if shape == "no-jobs-table" else "foreign"
    assert aside[0].name.startswith(f"{SIDECAR_NAME}.{kind}-")
    users = sqlite3.connect(aside[0]).execute("SELECT name FROM users").fetchall()
    assert users == [("alice",)]  # moved whole, not modified
