"""A rebuild (``reindex``, the rebuild on open) under live writers and intent checks loses no row.

A rebuild scans the status directories one after another while other processes write. A job
moved or added between two listings, or whose file had not landed yet, must still have its
row afterwards, and an intent check that read an intent before the rebuild must not clear
the intent the rebuild kept.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from hybridstore import JobStatus, JobStore
from hybridstore.journal import Journal

from ._support import assert_consistent, fs_state, make_job

SPAWN = multiprocessing.get_context("spawn")


def _rows(data_dir: Path) -> dict[str, tuple[str, int]]:
    """job id -> (status, version) of every sidecar row, read without opening a store."""
    conn = sqlite3.connect(f"file:{data_dir / 'hybridstore.sqlite3'}?mode=ro", uri=True)
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, status, version FROM jobs")}
    finally:
        conn.close()


def test_an_intent_check_that_read_before_a_rebuild_keeps_the_job_indexed(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an outside attack: an add, a reindex that scanned before the add's file
    landed, and an intent check (``expire`` from cron) that had read the add's intent
    before the rebuild left the job with neither row nor intent: no query saw it."""
    job = make_job("late-file")
    pid = os.fork()
    if pid == 0:  # another process adds the job and goes away, its intent not yet cleared
        JobStore(data_dir).add(job)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    path = data_dir / "pending" / f"{job.id}.json"
    aside = data_dir / "aside.bin"
    store = JobStore.__new__(JobStore)  # opened below, with the hook in place
    real = Journal.settled_job

    def rebuild_meanwhile(self: Journal, *args: Any) -> Any:
        # The check has read the intent. Now a rebuild in another process scans while the
        # file is not there yet (as if the add's file step were still running).
        os.rename(path, aside)
        child = os.fork()
        if child == 0:
            with JobStore(data_dir) as other:
                other.reindex()
            os._exit(0)
        assert os.waitpid(child, 0)[1] == 0
        os.rename(aside, path)  # the file lands
        return real(self, *args)

    monkeypatch.setattr(Journal, "settled_job", rebuild_meanwhile)
    store.__init__(data_dir)  # type: ignore[misc]  # opening checks the add's intent
    monkeypatch.undo()
    try:
        assert store.count() == 1
        assert [j.id for j in store.find(status=JobStatus.PENDING)] == [job.id]
        claimed = store.claim_next("w")
        assert claimed is not None and claimed.id == job.id
        assert_consistent(store)
    finally:
        store.close()


def _fail_when_told(
    data_dir: Path, job_id: str, attempt: int, committed: Any, go: Any, moved: Any
) -> None:
    """Another process fails the job back to pending, pausing its file step (after its
    row and intent have committed) until told to go on."""
    import hybridstore.journal as store_module

    real = store_module.write_many

    def paused(*args: Any, **kwargs: Any) -> None:
        committed.set()
        assert go.wait(30)
        real(*args, **kwargs)

    store_module.write_many = paused  # type: ignore[assignment]
    with JobStore(data_dir) as store:
        store.fail(job_id, "w", "again", attempt=attempt, retry_in=0)
        moved.set()


def test_a_job_moved_between_two_listings_of_a_rebuild_keeps_its_row(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an outside attack: a job failed back to pending after the rebuild listed
    ``pending/`` and before it listed ``processing/`` got no row, so ``find``, ``count`` and
    ``claim_next`` missed it."""
    with JobStore(data_dir) as store:
        store.add(make_job("mover", max_retries=3))
        claimed = store.claim_next("w")
        assert claimed is not None
    fork = multiprocessing.get_context("fork")
    committed, go, moved = fork.Event(), fork.Event(), fork.Event()
    writer = fork.Process(
        target=_fail_when_told,
        args=(data_dir, claimed.id, claimed.attempt, committed, go, moved),
    )
    writer.start()
    assert committed.wait(30)
    from hybridstore.files import Layout

    real_scan = Layout.scan

    def scan_with_a_move_between_listings(self: Layout) -> Any:
        for entry in real_scan(self):
            if entry.status is JobStatus.PROCESSING and not go.is_set():
                go.set()  # pending/ is listed: the move happens now
                assert moved.wait(30)
            yield entry
        if not go.is_set():  # processing/ was empty: let the writer go all the same
            go.set()
            assert moved.wait(30)

    monkeypatch.setattr(Layout, "scan", scan_with_a_move_between_listings)
    with JobStore(data_dir) as store:
        store.reindex()
        monkeypatch.undo()
        writer.join(30)
        assert writer.exitcode == 0
        assert _rows(data_dir) == {claimed.id: ("pending", claimed.version + 1)}
        assert store.count(status=JobStatus.PENDING) == 1
        again = store.claim_next("w2")
        assert again is not None and again.id == claimed.id
        assert_consistent(store)


def _mover(data_dir: str, name: str, seconds: float, queue: Any) -> None:
    """Adds jobs and moves them back and forth: claim, fail back to pending (retries
    left), claim again, complete."""
    ops = 0
    deadline = time.monotonic() + seconds
    with JobStore(data_dir, durable=False) as store:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            store.add(make_job(f"{name}-{n}", max_retries=3))
            job = store.claim_next(name)
            if job is None:
                continue
            job = store.fail(job.id, name, "again", attempt=job.attempt, retry_in=0)
            job = store.claim_next(name) or job
            if job.status is JobStatus.PROCESSING and job.worker_id == name:
                store.complete(job.id, name, {"n": n}, attempt=job.attempt)
            ops += 1
    queue.put((name, ops))


def _reindexer(data_dir: str, seconds: float, queue: Any) -> None:
    deadline = time.monotonic() + seconds
    runs = 0
    with JobStore(data_dir) as store:
        while time.monotonic() < deadline:
            store.reindex()
            runs += 1
    queue.put(("reindexes", runs))


def _sweeper(data_dir: str, seconds: float, queue: Any) -> None:
    """``hybridstore expire`` from cron: a new store each time, whose open checks intents."""
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        with JobStore(data_dir) as store:
            store.expire_overdue()
        runs += 1
    queue.put(("sweeps", runs))


@pytest.mark.slow
def test_reindex_loops_under_movers_and_sweeps_lose_no_row(data_dir: Path) -> None:
    """Found by an outside attack: 4-18 jobs in 40 s left with no row (adds racing an intent
    check and a rebuild), and a job moved back to pending between the scan's listings of
    ``pending/`` and ``processing/`` left out of every query. Now, with every process
    stopped and no store opened since, the sidecar's rows equal the files exactly."""
    seconds = 40.0
    JobStore(data_dir).close()
    queue = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_mover, args=(str(data_dir), "m1", seconds, queue)),
        SPAWN.Process(target=_mover, args=(str(data_dir), "m2", seconds, queue)),
        SPAWN.Process(target=_reindexer, args=(str(data_dir), seconds, queue)),
        SPAWN.Process(target=_sweeper, args=(str(data_dir), seconds, queue)),
    ]
    for proc in procs:
        proc.start()
    counts = dict(queue.get(timeout=seconds + 120) for _ in procs)
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    print(f"rebuild under writers: {counts} (m1, m2: job cycles)")
    assert len(counts) == 4 and all(n > 0 for n in counts.values()), counts
    files = fs_state(data_dir)
    rows = _rows(data_dir)
    assert {k: v for k, v in files.items() if rows.get(k) != v} == {}
    assert set(rows) == set(files)
    with JobStore(data_dir) as store:
        assert len(assert_consistent(store)) == len(files)
