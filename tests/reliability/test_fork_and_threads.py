"""Fork safety and thread safety of one ``JobStore`` object.

A store created (and used) before ``fork()`` works in the child, which gets its own
SQLite connection, and the parent's store keeps working after the child wrote and exited
- also when the fork happens while other threads of the parent are busy writing. One
store shared by eight threads doing mixed writes ends consistent, with no double claim.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
from pathlib import Path

import pytest

from hybridstore import (
    InvalidTransition,
    JobNotFound,
    JobStore,
    NotJobOwner,
    RemoteJob,
    VersionConflict,
)

from ._support import assert_consistent, make_job

_CTX = multiprocessing.get_context("fork")


def _child_uses_inherited_store(store: JobStore, prefix: str) -> None:
    pid = os.getpid()
    for i in range(20):
        store.add(make_job(f"{prefix}-{pid}-{i}"))
    claimed = store.claim_next(f"child-{pid}")
    assert claimed is not None
    store.complete(claimed.id, f"child-{pid}")
    assert store.get(f"{prefix}-{pid}-0") is not None
    assert store._sidecar._pid == pid  # its own connection, not the parent's
    assert store.verify().ok
    os._exit(0)


def test_a_store_created_before_fork_works_in_the_child(data_dir: Path) -> None:
    store = JobStore(data_dir)
    store.add(make_job("before-fork"))
    assert store.find()  # the parent's connection is open and used
    procs = [_CTX.Process(target=_child_uses_inherited_store, args=(store, "c")) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    # The parent's connection was never touched by the children: it goes on working.
    store.add(make_job("after-fork"))
    jobs = assert_consistent(store)
    assert len(jobs) == 2 + 3 * 20
    store.close()


def test_fork_while_parent_threads_are_writing(data_dir: Path) -> None:
    """Locks held by other threads at the moment of fork() must not hang the child."""
    store = JobStore(data_dir, durable=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                store.add(make_job(f"t{n}-{i}"))
                job = store.claim_next(f"t{n}")
                if job is not None:
                    store.complete(job.id, f"t{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(8):
            proc = _CTX.Process(target=_child_uses_inherited_store, args=(store, f"r{round_}"))
            proc.start()
            proc.join(30)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
                pytest.fail("a child forked while threads were writing hung")
            assert proc.exitcode == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert_consistent(store)
    store.close()


def test_one_store_shared_by_eight_threads(data_dir: Path) -> None:
    store = JobStore(data_dir)
    errors: list[str] = []
    claims: list[tuple[str, int]] = []
    claims_lock = threading.Lock()
    expected = (VersionConflict, NotJobOwner, InvalidTransition, JobNotFound)

    def worker(n: int) -> None:
        rng = random.Random(n)
        mine: list[str] = []
        for i in range(150):
            roll = rng.random()
            try:
                if roll < 0.3 or not mine:
                    mine.append(store.add(make_job(f"th{n}-{i}")).id)
                elif roll < 0.6:
                    job = store.claim_next(f"th{n}")
                    if job is not None:
                        with claims_lock:
                            claims.append((job.id, job.attempt))
                        if rng.random() < 0.7:
                            store.complete(job.id, f"th{n}", attempt=job.attempt)
                        else:
                            store.fail(job.id, f"th{n}", "x", attempt=job.attempt, retry_in=0)
                elif roll < 0.85:
                    current = store.get(rng.choice(mine))
                    if current is not None:
                        store.save(
                            current.model_copy(update={"task_options": {"i": i}}),
                            expected_version=current.version,
                        )
                else:
                    store.delete(mine.pop(rng.randrange(len(mine))))
            except expected:
                pass
            except Exception as exc:  # every other error is a finding
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(claims) == len(set(claims)) and len(claims) > 100
    jobs = assert_consistent(store)
    assert all(isinstance(j, RemoteJob) for j in jobs.values())
    store.close()
