"""Job locks (flock on kept descriptors, paired with thread locks) exclude threads, processes
and forked children, and every wait ends in ``LockTimeout``."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from hybridstore import JobStore, LockTimeout
from hybridstore.locks import StripeLocks

from ._support import make_job


@pytest.fixture
def locks(tmp_path: Path) -> Any:
    directory = tmp_path / ".locks"
    directory.mkdir()
    user = object()
    stripes = StripeLocks.of(directory, user)
    yield stripes
    stripes.release(user)


def test_two_threads_sharing_the_descriptors_exclude_each_other(locks: StripeLocks) -> None:
    locks.acquire("job-a", 1.0)
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(locks.try_acquire("job-a")))
    thread.start()
    thread.join()
    assert got == [False]  # same process, same descriptor: the thread lock excludes it
    waited: list[BaseException] = []

    def wait() -> None:
        try:
            locks.acquire("job-a", 0.2)
        except LockTimeout as exc:
            waited.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(10)
    assert len(waited) == 1 and "job-a" in str(waited[0])  # a bounded wait, then the error
    locks.unlock("job-a")
    assert locks.try_acquire("job-a")
    locks.unlock("job-a")


def _try_in_child(directory: str, job_id: str, queue: Any) -> None:
    user = object()
    stripes = StripeLocks.of(Path(directory), user)
    first = stripes.try_acquire(job_id)
    queue.put(first)
    if first:
        stripes.unlock(job_id)
    stripes.release(user)


def test_another_process_is_excluded_until_release(locks: StripeLocks) -> None:
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    locks.acquire("job-b", 1.0)
    child = spawn.Process(target=_try_in_child, args=(str(locks.directory), "job-b", queue))
    child.start()
    assert queue.get(timeout=30) is False
    child.join(30)
    locks.unlock("job-b")
    child = spawn.Process(target=_try_in_child, args=(str(locks.directory), "job-b", queue))
    child.start()
    assert queue.get(timeout=30) is True
    child.join(30)


def test_a_forked_child_holds_none_of_the_parents_locks(locks: StripeLocks) -> None:
    """flock belongs to the open file description, which a child inherits, and so does the
    state of every thread lock: without care, a child would share its parent's locks (its
    flock on an inherited descriptor succeeds at once) or wait forever for a thread lock
    that nobody in the child will release."""
    locks.acquire("job-c", 1.0)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            mine = StripeLocks.of(locks.directory, object())
            os.write(to_parent_w, b"1" if mine.try_acquire("job-c") else b"0")
            os.read(to_child_r, 1)  # the parent has released it
            mine.acquire("job-c", 5.0)  # LockTimeout (exit 1) if it stayed held here
            os.write(to_parent_w, b"2")
            os.read(to_child_r, 1)
            mine.unlock("job-c")
            os.write(to_parent_w, b"3")
            os.read(to_child_r, 1)
        finally:
            os._exit(0)
    os.close(to_parent_w)  # so that a child that died reads as EOF, not a hang
    os.close(to_child_r)
    try:
        assert os.read(to_parent_r, 1) == b"0"  # the parent's lock excludes the child
        locks.unlock("job-c")
        os.write(to_child_w, b"x")
        assert os.read(to_parent_r, 1) == b"2"  # the child took it once released
        assert not locks.try_acquire("job-c")  # and now excludes the parent
        os.write(to_child_w, b"x")
        assert os.read(to_parent_r, 1) == b"3"
        assert locks.try_acquire("job-c")
        locks.unlock("job-c")
        os.write(to_child_w, b"x")
    finally:
        assert os.waitpid(pid, 0)[1] == 0


def test_a_claim_whose_candidates_all_stay_locked_ends_in_lock_timeout(data_dir: Path) -> None:
    """It was an unbounded loop."""
    with JobStore(data_dir, lock_timeout=0.3) as store:
        job = store.add(make_job("only"))
        holder = JobStore(data_dir)
        ready, done = threading.Event(), threading.Event()

        def hold() -> None:
            with holder.journal.lock(job.id, 1.0):
                ready.set()
                done.wait(10)

        thread = threading.Thread(target=hold)
        thread.start()
        ready.wait(10)
        try:
            with pytest.raises(LockTimeout):
                store.claim_next("w")
        finally:
            done.set()
            thread.join()
            holder.close()
        claimed = store.claim_next("w")
        assert claimed is not None and claimed.id == "only"
