"""A writer stopped inside a write (SIGSTOP, a stalled disk) holds one job's lock: sweeps over
many jobs pass that job over and go on with the rest, as ``SKIP LOCKED`` does."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from hybridstore import JobStatus, JobStore
from hybridstore.model import utcnow

from ._support import assert_consistent, make_job


def _stop_inside_a_write(data_dir: Path, job_id: str, ready_w: int) -> None:
    """In a child: heartbeat (if processing) or cancel ``job_id``, and stop for good
    between its row's commit and its file step, holding the job's lock."""
    import hybridstore.journal as store_module

    def stopped(*args: object, **kwargs: object) -> None:
        os.write(ready_w, b"x")
        os.kill(os.getpid(), signal.SIGSTOP)

    store_module.write_many = stopped  # type: ignore[assignment]
    with JobStore(data_dir) as store:
        job = store.get(job_id)
        assert job is not None
        if job.status is JobStatus.PROCESSING:
            store.heartbeat(job_id, "stuck-worker", lease_seconds=1)
        else:
            store.cancel(job_id)


def test_a_stopped_writer_blocks_no_sweep(data_dir: Path) -> None:
    """Found by an outside attack: every ``expire_overdue()`` raised ``LockTimeout`` after
    5 s and left five other abandoned jobs in processing; ``verify`` failed the same way."""
    with JobStore(data_dir) as store:
        for i in range(6):
            store.add(make_job(f"abandoned-{i}"))
        for i in range(6):
            worker = "stuck-worker" if i == 0 else f"gone-{i}"
            assert store.claim_next(worker, lease_seconds=1) is not None
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _stop_inside_a_write(data_dir, "abandoned-0", ready_w)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        later = utcnow() + timedelta(hours=1)
        with JobStore(data_dir, lock_timeout=5.0) as store:
            started = time.monotonic()
            expired = store.expire_overdue(now=later)
            took = time.monotonic() - started
            assert sorted(j.id for j in expired) == [f"abandoned-{i}" for i in range(1, 6)]
            assert store.last_skipped == ["abandoned-0"]
            assert took < 5.0  # no whole lock_timeout spent on the busy job
            report = store.verify()  # the stopped write's intent is a suspect
            busy = [(p.kind, p.job_id) for p in report.problems if p.kind == "busy"]
            assert busy == [("busy", "abandoned-0")]
            assert report.ok  # busy is not drift: the next run checks it
            assert store.repair().busy == ["abandoned-0"]
            assert store.cleanup(days_old=0, now=later) == 0
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with JobStore(data_dir) as store:  # the dead writer's job is recovered on open
        jobs = assert_consistent(store)
        assert jobs["abandoned-0"].status is JobStatus.PROCESSING
        assert [j.id for j in store.expire_overdue(now=later)] == ["abandoned-0"]


def test_temp_files_of_killed_writers_are_collected_on_open(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temp file no intent names (its writer killed) was left for ``repair`` to remove
    after 15 minutes. Now an open removes it (at most one open a minute looks), as its
    job's lock is free; the temp file of a write in flight (its lock held) stays."""
    import hybridstore.maintenance

    with JobStore(data_dir) as store:
        store.add(make_job("dead"))
        store.add(make_job("live"))
    dead = data_dir / "pending" / ".dead.json.0123456789ab.tmp"
    dead.write_bytes(b'{"half":')
    live = data_dir / "pending" / ".live.json.ba9876543210.tmp"
    live.write_bytes(b'{"half":')
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a writer of "live", stopped mid-write, holding its lock
        try:
            _stop_inside_a_write(data_dir, "live", ready_w)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        with JobStore(data_dir):
            assert dead.exists()  # the first open of the directory looked moments ago
        monkeypatch.setattr(hybridstore.maintenance, "TEMP_SWEEP_EVERY", 0)
        with JobStore(data_dir):
            assert not dead.exists()
            assert live.exists()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
